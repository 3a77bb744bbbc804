"""Where a run's time goes: its slot-seconds (wall time x trial slots) split into phases,
read from what the run wrote (issue: time goes into training).

Measured phases, summed over trials and cells:
- training: each epoch's training pass (`epoch_time_s`);
- evaluation: each epoch's validation pass (`eval_s`);
- checkpoint and report: each checkpoint save + `tune.report` call (`report_s`; a trial's
  last call is not measured);
- trial setup: data and model before a trial's first epoch (`setup_s`);
- experiment start: a cell's Tune driver until its first trial began its setup (in a
  shared driver, service.backends.tune.shared: from the driver's start for the cells it opens first,
  from when it opened the cell for the others), and experiment end: from its last
  trial's last epoch until `fit` returned (shared: until the driver saw the cell done);
- final test: the test of each cell's best trial on its reserved slot (the wait for a
  free slot is not counted: other trials used the slot meanwhile; a shared driver scores
  a trial's own weights without reserving one, so that part overlaps other trials);
and the rest, "trial starts, snapshots and idle slots": slot-seconds minus all of the above
(actor start-up between trials, Tune's experiment snapshots, slots with nothing to run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from service.core.layout import RUN_FILE

PHASES = ("training", "evaluation", "checkpoint and report", "trial setup",
          "experiment start", "experiment end", "final test",
          "trial starts, snapshots and idle slots")


def _sum(frame: pd.DataFrame, column: str) -> float:
    if frame.empty or column not in frame:
        return 0.0
    return float(pd.to_numeric(frame[column], errors="coerce").fillna(0.0).sum())


def _starting_slot_s(starts: list[tuple[float, float]], busy: list[tuple[float, float]],
                     slots: int, step: float = 0.05) -> float:
    """Slot-seconds that experiments spent starting: at each instant, as many slots as
    experiments were starting (from their driver's start to their first trial's setup), at
    most the slots no trial or final test held. An experiment that starts while every slot
    is busy (`max_parallel_experiments` above the slots) costs no slot time until one
    frees."""
    import numpy as np

    if not starts:
        return 0.0
    t0 = min(a for a, _ in starts)
    t1 = max(b for _, b in starts)
    grid = np.arange(t0, t1, step) + step / 2
    starting = sum(((grid >= a) & (grid < b)).astype(int) for a, b in starts)
    held = sum(((grid >= a) & (grid < b)).astype(int) for a, b in busy) if busy else 0
    return float(np.minimum(starting, np.maximum(0, slots - held)).sum() * step)


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
        starts, busy = [], []
        for _, cell in summaries.iterrows():
            rows = epochs[(epochs.searcher == cell.searcher) & (epochs.backbone == cell.backbone)
                          & (epochs.seed == cell.seed)]
            if rows.empty or not math.isfinite(float(cell.get("fit_started_unix", math.nan))):
                continue
            # a trial began its setup at its first row's end minus its elapsed and setup
            began = rows.unix_time - rows.elapsed_s - pd.to_numeric(
                rows.get("setup_s", 0.0), errors="coerce").fillna(0.0)
            starts.append((float(cell.started_unix), float(began.min())))
            busy += list(zip(began.groupby(rows.trial).min(),
                             rows.unix_time.groupby(rows.trial).max(), strict=True))
            tested = float(cell.get("final_test_started_unix", math.nan))
            if not math.isfinite(tested):  # before the start was recorded
                tested = float(cell.fit_ended_unix)
            tested += float(cell.get("final_test_wait_s", 0) or 0)
            busy.append((tested, tested + float(cell.get("final_test_s", 0) or 0)))
            seconds["experiment end"] += max(0.0, float(cell.fit_ended_unix) -
                                             float(rows.unix_time.max()))
        seconds["experiment start"] = _starting_slot_s(starts, busy, int(run["slots"]))
    measured = sum(seconds.values())
    seconds["trial starts, snapshots and idle slots"] = slot_s - measured
    return {"wall_s": wall, "slots": int(run["slots"]), "slot_s": slot_s,
            "seconds": seconds, "cells": len(summaries),
            "final_test_wait_s": _sum(summaries, "final_test_wait_s"),
            "report_refreshes": run.get("report_refreshes"),
            "report_refresh_cpu_s": run.get("report_refresh_cpu_s"),
            "share": {k: v / slot_s if slot_s > 0 else math.nan for k, v in seconds.items()}}


def breakdown_markdown(result: dict[str, Any]) -> str:
    """The breakdown as a Markdown table, the share of slot time per phase."""
    lines = [f"Wall time {result['wall_s']:.0f} s x {result['slots']} trial slots = "
             f"{result['slot_s']:.0f} slot-seconds:", "",
             "| phase | seconds | share of slot time |", "|---|---:|---:|"]
    for phase in PHASES:
        lines.append(f"| {phase} | {result['seconds'][phase]:.1f} | "
                     f"{100 * result['share'][phase]:.1f}% |")
    if result.get("report_refreshes") is not None:
        lines += ["", f"The live report was rewritten {result['report_refreshes']} times "
                      f"meanwhile, on {result['report_refresh_cpu_s']:.1f} s of CPU in all "
                      f"(at low priority; it is not a phase of the trial slots)."]
    if result.get("final_test_wait_s"):
        lines += ["", f"Final tests also waited {result['final_test_wait_s']:.1f} s in all "
                      f"for a free slot ({result['cells']} cells), while other trials used it."]
    return "\n".join(lines) + "\n"
