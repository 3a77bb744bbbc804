"""Where a run's time goes: its slot-seconds (wall time x trial slots) split into phases,
read from what the run wrote (issue: time goes into training).

Measured phases, summed over trials and cells:
- training: each epoch's training pass (`epoch_time_s`);
- evaluation: each epoch's validation pass (`eval_s`);
- checkpoint and report: each checkpoint save + `tune.report` call (`report_s`; a trial's
  last call is not measured);
- trial setup: data and model before a trial's first epoch (`setup_s`);
- experiment start: a cell's Tune driver until its first trial began its setup, and
  experiment end: from its last trial's last epoch until `fit` returned;
- final test: the retraining of each cell's best trial on its reserved slot (the wait for
  a free slot is not counted: other trials used the slot meanwhile);
and the rest, "trial starts, snapshots and idle slots": slot-seconds minus all of the above
(actor start-up between trials, Tune's experiment snapshots, slots with nothing to run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

RUN_FILE = "run.json"
"""Per experiment folder: when `run_all` started and ended and its trial slots."""

PHASES = ("training", "evaluation", "checkpoint and report", "trial setup",
          "experiment start", "experiment end", "final test",
          "trial starts, snapshots and idle slots")


def _sum(frame: pd.DataFrame, column: str) -> float:
    if frame.empty or column not in frame:
        return 0.0
    return float(pd.to_numeric(frame[column], errors="coerce").fillna(0.0).sum())


def breakdown(folder: str | Path) -> dict[str, Any] | None:
    """The phases of one experiment folder (seconds and share of slot-seconds), or None
    when it holds no RUN_FILE (a run before this measurement, or a replay)."""
    from service.reports.load import load_epochs, load_summaries

    folder = Path(folder)
    run_path = folder / RUN_FILE
    if not run_path.exists():
        return None
    run = json.loads(run_path.read_text())
    wall = float(run["ended_unix"]) - float(run["started_unix"])
    slot_s = wall * int(run["slots"])
    epochs = load_epochs(folder)
    summaries = load_summaries(folder)
    seconds = {
        "training": _sum(epochs, "epoch_time_s"),
        "evaluation": _sum(epochs, "eval_s"),
        "checkpoint and report": _sum(epochs, "report_s"),
        "trial setup": _sum(epochs, "setup_s"),
        "experiment start": 0.0, "experiment end": 0.0,
        "final test": _sum(summaries, "final_test_s"),
    }
    if not epochs.empty and "fit_started_unix" in summaries:
        for _, cell in summaries.iterrows():
            rows = epochs[(epochs.searcher == cell.searcher) & (epochs.backbone == cell.backbone)
                          & (epochs.seed == cell.seed)]
            if rows.empty or not math.isfinite(float(cell.get("fit_started_unix", math.nan))):
                continue
            # a trial began its setup at its first row's end minus its elapsed and setup
            first = rows.sort_values("unix_time").iloc[0]
            began = float(first.unix_time) - float(first.elapsed_s) - float(
                first.get("setup_s", 0.0) or 0.0)
            seconds["experiment start"] += max(0.0, began - float(cell.started_unix))
            seconds["experiment end"] += max(0.0, float(cell.fit_ended_unix) -
                                             float(rows.unix_time.max()))
    measured = sum(seconds.values())
    seconds["trial starts, snapshots and idle slots"] = slot_s - measured
    return {"wall_s": wall, "slots": int(run["slots"]), "slot_s": slot_s,
            "seconds": seconds, "cells": len(summaries),
            "final_test_wait_s": _sum(summaries, "final_test_wait_s"),
            "share": {k: v / slot_s if slot_s > 0 else math.nan for k, v in seconds.items()}}


def breakdown_markdown(result: dict[str, Any]) -> str:
    """The breakdown as a Markdown table, the share of slot time per phase."""
    lines = [f"Wall time {result['wall_s']:.0f} s x {result['slots']} trial slots = "
             f"{result['slot_s']:.0f} slot-seconds:", "",
             "| phase | seconds | share of slot time |", "|---|---:|---:|"]
    for phase in PHASES:
        lines.append(f"| {phase} | {result['seconds'][phase]:.1f} | "
                     f"{100 * result['share'][phase]:.1f}% |")
    if result.get("final_test_wait_s"):
        lines += ["", f"Final tests also waited {result['final_test_wait_s']:.1f} s in all "
                      f"for a free slot ({result['cells']} cells), while other trials used it."]
    return "\n".join(lines) + "\n"
