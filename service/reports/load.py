"""Reading one storage path back: cell folders (named by `service.core.layout`), each trial's
result.json, final_test.json, summary.json and experiment_config.json. Read from the files
alone, so a report also works after a crash or on another machine; a cut or missing file
never stops it.

Each result.json is read once per report: `load_epochs` reads them, and `load_trials` and
`load_cells` take that frame (they read it themselves only when called alone).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core.api import HP_PREFIX
from service.core.config import ConfigError
from service.core.layout import (
    CELL_GLOB,
    CONFIG_FILE,
    FINAL_TEST_FILE,
    SUMMARY_FILE,
    Cell,
    cell_name,
    parse_cell_name,
)

ANALYSIS_HP = tuple(f"{HP_PREFIX}{name}" for name in
                    ("optimizer", "lr", "flip", "rotation", "shift", "zoom"))
"""The epochs frame's columns of the settings in force (section 6.1's analysis)."""
AUGMENT_HP = tuple(f"{HP_PREFIX}{name}" for name in ("flip", "rotation", "shift", "zoom"))
"""The augmentation settings: one combination of their values is one condition (SVDAC)."""

ERROR_FILE = "error.txt"
"""What Tune writes into a trial's folder each time the trial fails (ray.air.constants
EXPR_ERROR_FILE, appended by Trial.handle_error, synced to the storage path; error.pkl beside
it for Ray task errors). It stays after a retry under max_failures."""
TRIAL_FILES = ("result.json", "params.json", ERROR_FILE, "error.pkl")
"""Any of these marks a sub-folder of a cell as a trial folder Tune created."""

EPOCH_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "grad_norm",
                 "epoch_time_s", "elapsed_s", "unix_time", "images_per_s", "model_size_mb",
                 "diverged", "schedule", "reward", "terminated", "restarts",
                 "train_ms_per_batch", "setup_s", "eval_s", "report_s", "pid")
"""What each epoch row of the epochs frame keeps of a result line, besides its cell, trial,
epoch, Tune's timestamp and time_total_s, config and the `ANALYSIS_HP` settings."""
NUMERIC = ("epoch", "timestamp", "time_total_s", "val_acc", "train_acc", "epoch_time_s",
           "elapsed_s", "unix_time")
"""Epochs-frame columns read as numbers (None from odd lines becomes NaN)."""


_WARNED: dict[str, str] = {}


def unreadable(path: Path, what: str) -> None:
    """Note that a file which is there could not be read and what the report leaves out
    for it; `flush_warnings` says it once the report is written (a refused report says
    only why)."""
    _WARNED.setdefault(str(path), what)


def flush_warnings(say: bool = True) -> None:
    """Print each noted file as one `warning:` line on stderr (or drop them), once."""
    if say:
        for path, what in _WARNED.items():
            print(f"warning: {path}: {what}", file=sys.stderr)
    _WARNED.clear()


def regular_file(path: Path, left_out: str = "left out of the report") -> bool:
    """Whether `path` is a regular file to read; something else there (a dangling link, a
    pipe that would never end, a folder) is warned about, nothing there is not."""
    if path.is_file():
        return True
    if os.path.lexists(path):
        unreadable(path, f"not a regular file (a dangling link, a pipe, a folder?); "
                   f"{left_out}")
    return False


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, cut or not an object (a run
    that crashed while writing it must not stop the report; one that is there is warned
    about). A BOM is read past, as the YAML reader does."""
    if not regular_file(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        unreadable(path, "not readable JSON; left out of the report")
        return None
    if not isinstance(data, dict):
        unreadable(path, "not a JSON object; left out of the report")
        return None
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
                bad += 1
    kept = [r for r in rows if isinstance(r, dict)]
    bad += len(rows) - len(kept)
    if bad:
        unreadable(path, f"{bad} line(s) not JSON objects, left out ({len(kept)} kept)")
    return kept


def _cell_meta(cell: Cell) -> dict[str, Any]:
    return {"searcher": cell.searcher, "backbone": cell.backbone, "seed": cell.seed}


def _cells(folder: Path) -> list[tuple[Path, Cell]]:
    """The cell folders (`service.core.layout`) of one experiment folder with their cells."""
    out = []
    for d in sorted(folder.glob(CELL_GLOB)):
        cell = parse_cell_name(d.name)
        if cell is not None and d.is_dir():
            out.append((d, cell))
    return out


def _cell_dirs(folder: Path) -> list[Path]:
    return [d for d, _ in _cells(folder)]


def _is_experiment(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or bool(_cell_dirs(folder))


def find_experiments(folder: str | Path) -> list[Path]:
    """The experiment folders one report covers: `folder` itself when it is one (it holds
    experiment_config.json or cell folders), else its direct sub-folders that are (a storage
    root). Anything else is a ConfigError naming the folder and the fix."""
    folder = Path(folder)
    if _is_experiment(folder):
        return [folder]
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and _is_experiment(d)] \
        if folder.is_dir() else []
    if not subs:
        raise ConfigError(
            f"folder: {str(folder)!r} holds no experiment (no {CONFIG_FILE} in it or in any "
            "direct sub-folder, no <searcher>__<backbone>__s<seed> folders); give "
            "<storage>/<name> of a run, or the storage folder holding such runs")
    return subs


def _experiment_name(folder: Path) -> str:
    return folder.name or folder.resolve().name


def _config_lists(folder: Path) -> tuple[list[str], list[str]]:
    """The searchers (as the config spells them, `emerald:product`, like the reports'
    searcher column) and backbones an experiment listed."""
    config = _read_json(folder / CONFIG_FILE) or {}
    searchers, backbones = config.get("searchers"), config.get("backbones")
    return ([str(n) for n in searchers] if isinstance(searchers, list) else [],
            [str(b) for b in backbones] if isinstance(backbones, list) else [])


def _with_numbers(epochs: pd.DataFrame) -> pd.DataFrame:
    """A copy of `epochs` with its `NUMERIC` columns as numbers (the caller's frame is left
    as it was)."""
    epochs = epochs.copy()
    for col in NUMERIC:
        if col in epochs:
            epochs[col] = pd.to_numeric(epochs[col], errors="coerce")
    return epochs


def load_epochs(storage: str | Path) -> pd.DataFrame:
    """Every reported epoch of every trial under `storage` (one folder per cell): its cell,
    trial, epoch, Tune's whole-second `timestamp`, the trial's own `elapsed_s` and the
    epoch's end `unix_time` (NaN in result files older than them), metrics, the trial's
    `schedule` through this epoch (JSON), its config and the settings in force."""
    rows: list[dict[str, Any]] = []
    for cell_dir, cell in _cells(Path(storage)):
        meta = _cell_meta(cell)
        for result_file in sorted(cell_dir.glob("*/result.json")):
            trial_dir = result_file.parent
            for r in _read_jsonl(result_file):
                config = {k: v for k, v in (r.get("config") or {}).items() if k != "run"}
                rows.append({
                    **meta, "trial": trial_dir.name, "trial_id": r.get("trial_id"),
                    "epoch": r.get("training_iteration"), "timestamp": r.get("timestamp"),
                    "time_total_s": r.get("time_total_s"),
                    **{k: r.get(k) for k in EPOCH_METRICS},
                    "config": json.dumps(config, sort_keys=True, default=str),
                    # the settings in force this epoch (they change under emerald-dynamic)
                    **{k: r.get(k, config.get(k[len(HP_PREFIX):])) for k in ANALYSIS_HP},
                })
    return _with_numbers(pd.DataFrame(rows)) if rows else pd.DataFrame()


def _span(df: pd.DataFrame) -> tuple[float, float]:
    """When a trial (or a cell's trials) started and finished: from `unix_time` and
    `elapsed_s` where the rows carry them, else from Tune's whole-second timestamps."""
    starts = (df["unix_time"] - df["elapsed_s"]) if {"unix_time", "elapsed_s"} <= set(df) \
        else pd.Series(dtype=float)
    ends = df["unix_time"] if "unix_time" in df else pd.Series(dtype=float)
    starts, ends = starts.dropna(), ends.dropna()
    if not starts.empty and not ends.empty:
        return float(starts.min()), float(ends.max())
    return math.nan, math.nan


def load_trials(storage: str | Path, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per trial: searcher, backbone, seed, config, best and last metrics, times
    (`started`/`finished` in unix seconds), whether it errored and `schedule`, the JSON
    schedule through its best epoch (what ran, for a trial whose config is `{}` because an
    in-trial controller chose everything; empty when absent). `epochs` is `load_epochs`'s
    frame of the same storage, read here when not given."""
    storage = Path(storage)
    epochs = load_epochs(storage) if epochs is None else _with_numbers(epochs)
    folders = {cell: d for d, cell in _cells(storage)}
    rows: list[dict[str, Any]] = []
    if epochs.empty:
        return pd.DataFrame(rows)
    for (searcher, backbone, seed, trial), df in epochs.groupby(
        ["searcher", "backbone", "seed", "trial"], sort=False
    ):
        df = df.sort_values("epoch")
        finite = df[np.isfinite(pd.to_numeric(df["val_acc"], errors="coerce"))]
        best = finite.loc[finite["val_acc"].idxmax()] if not finite.empty else None
        started, finished = _span(df)
        if math.isnan(started):  # result files older than unix_time / elapsed_s
            started = float(df["timestamp"].min() - df["epoch_time_s"].iloc[0])
            finished = float(df["timestamp"].max())
        schedule = best.get("schedule") if best is not None else None
        cell = Cell(searcher, backbone, int(seed))
        cell_dir = folders.get(cell) or storage / cell_name(cell)
        rows.append({
            "searcher": searcher, "backbone": backbone, "seed": seed, "trial": trial,
            "config": df["config"].iloc[-1],
            "epochs": int(df["epoch"].max()) if df["epoch"].notna().any() else 0,
            "best_val_acc": float(best["val_acc"]) if best is not None else math.nan,
            "train_acc_at_best": float(best["train_acc"]) if best is not None else math.nan,
            "last_val_acc": float(df["val_acc"].iloc[-1]),
            "diverged": bool(df["diverged"].fillna(False).astype(bool).any()),
            "started": started, "finished": finished,
            "train_time_s": float(df["epoch_time_s"].sum()),
            "errored": (cell_dir / trial / ERROR_FILE).exists(),
            "schedule": schedule if isinstance(schedule, str) else "",
        })
    return pd.DataFrame(rows)


def _schedule_text(schedule: Any) -> str:
    """final_test.json's `schedule` as a JSON string (empty when absent)."""
    if schedule is None:
        return ""
    if isinstance(schedule, str):
        return schedule
    return json.dumps(schedule, sort_keys=True, separators=(",", ":"), default=str)


FINAL_SCORES: tuple[str, ...] = ("test_loss", "test_precision_macro", "test_recall_macro",
                                 "test_f1_macro", "epochs", "model_size_mb",
                                 "train_ms_per_batch", "infer_ms_per_batch")
"""final_test.json's other numbers (NaN where an older file lacks them): Pham's
Table 2 reads the macro metrics, Iranfar et al.'s Table V the size and timings."""


def load_final_tests(storage: str | Path) -> pd.DataFrame:
    """The test-split score of each cell's chosen configuration, the configuration and, for
    a method that changes hyperparameters inside a trial, the schedule it replayed; then
    `FINAL_SCORES`."""
    rows = []
    for cell_dir, cell in _cells(Path(storage)):
        test = _read_json(cell_dir / FINAL_TEST_FILE)
        if test is not None:
            rows.append({**_cell_meta(cell), "test_acc": test.get("test_acc"),
                         "chosen_config": json.dumps(test.get("config"), sort_keys=True),
                         "chosen_schedule": _schedule_text(test.get("schedule")),
                         **{k: _number(test.get(k)) for k in FINAL_SCORES}})
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "test_acc",
                                       "chosen_config", "chosen_schedule", *FINAL_SCORES])


def load_summaries(storage: str | Path) -> pd.DataFrame:
    """Each cell's summary.json (absent for a cell whose run crashed)."""
    rows = []
    for cell_dir in _cell_dirs(Path(storage)):
        summary = _read_json(cell_dir / SUMMARY_FILE)
        if summary is not None:
            rows.append(summary)
    return pd.DataFrame(rows)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def load_cells(storage: str | Path, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (Tune experiment) of one experiment folder: trial folders Tune
    created (also those that failed before reporting), trials with an error file, epochs
    trained (last training_iteration per trial), trial time (time_total_s of each trial's
    last result, summed), wall time (summary.json's wall_time_s, else the span of the
    results, flagged by wall_from: from the first trial's start, unix_time - elapsed_s, to
    the last unix_time, or from Tune's timestamps in older result files) and the best
    validation accuracy. Read from the files alone, so a crashed cell still counts.
    `epochs` is `load_epochs`'s frame of the same storage, read here when not given."""
    storage = Path(storage)
    epochs = load_epochs(storage) if epochs is None else _with_numbers(epochs)
    rows = []
    for cell_dir, cell in _cells(storage):
        meta = _cell_meta(cell)
        trial_dirs = [d for d in sorted(cell_dir.iterdir())
                      if d.is_dir() and any((d / f).exists() for f in TRIAL_FILES)]
        ep = pd.DataFrame()
        if not epochs.empty:
            ep = epochs[(epochs.searcher == cell.searcher) & (epochs.backbone == cell.backbone)
                        & (epochs.seed == cell.seed)]
        trained = trial_time = best = wall_ts = math.nan
        if not ep.empty:
            last = ep.sort_values("epoch", kind="stable").groupby("trial").tail(1)
            trained = float(ep.groupby("trial")["epoch"].max().sum())
            trial_time = float(last["time_total_s"].sum())
            best = float(ep["val_acc"].max())  # NaN (diverged) epochs are skipped
            start, end = _span(ep)
            if math.isnan(start):  # result files older than unix_time / elapsed_s
                start = (ep["timestamp"] - ep["time_total_s"].fillna(0)).min()
                end = ep["timestamp"].max()
            wall_ts = float(end - start)
        summary = _read_json(cell_dir / SUMMARY_FILE) or {}
        wall = _number(summary.get("wall_time_s"))
        wall_from = "summary" if math.isfinite(wall) else (
            "timestamps" if math.isfinite(wall_ts) else "")
        rows.append({
            **meta, "cell": cell_dir.name, "trials": len(trial_dirs),
            "errored": sum((d / ERROR_FILE).exists() or (d / "error.pkl").exists()
                           for d in trial_dirs),
            "epochs": 0 if math.isnan(trained) else int(trained),
            "trial_time_s": 0.0 if math.isnan(trial_time) else trial_time,
            "wall_time_s": wall if math.isfinite(wall) else wall_ts,
            "wall_from": wall_from, "best_val_acc": best,
        })
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "cell", "trials",
                                       "errored", "epochs", "trial_time_s", "wall_time_s",
                                       "wall_from", "best_val_acc"])


def _load_one(folder: Path) -> tuple[pd.DataFrame, ...]:
    """Trials (with their cell's test accuracy), final tests, epochs, summaries, cells of
    one experiment folder, each result.json read once."""
    epochs = load_epochs(folder)
    trials = load_trials(folder, epochs)
    tests = load_final_tests(folder)
    if not trials.empty:
        trials = trials.merge(tests[["searcher", "backbone", "seed", "test_acc"]],
                              on=["searcher", "backbone", "seed"], how="left")
    return trials, tests, epochs, load_summaries(folder), load_cells(folder, epochs)
