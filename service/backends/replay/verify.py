"""Verified scores: an in-trial schedule retrained for real on a table's own recording
settings, and the continuation models' measured error against those retrainings.

A table recorded by `python -m service record` can be repeated: its metadata names the
backbone, the data and the epochs (and, for tables recorded before the `run` key existed,
the preset that made it), and the trainer is deterministic on the CPU, so a constant
schedule retrains to the table's own curve. Each retrained (schedule, seed) curve is kept
beside the table in `<table>.switches.parquet` (the table's switch curves): a replay that
meets the same schedule again reads it instead of training, and every stored curve that
switches measures the continuation models (service.backends.replay.switches).

`python -m service.backends.replay.verify --table T [--sample N]` retrains N sampled switch
schedules (A for e epochs, then B) and prints every model's error with its 95% CI.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.backends.replay.switches import (
    SwitchStore,
    canonical,
    format_errors,
    model_errors,
    sample_switches,
    store_of,
)
from service.core.api import Schedule
from service.core.table import ReplayTable, cached_table


def recording_run(table: ReplayTable) -> dict[str, Any] | None:
    """The `RunSettings` the table was recorded with (seed left out), or None when the
    table does not say (recorded elsewhere): then it cannot be verified."""
    meta = table.meta
    run = meta.extra.get("run")
    if isinstance(run, dict):
        return {k: v for k, v in run.items() if k not in ("seed", "test_last")}
    if not meta.backbone or not meta.command:
        return None
    words = shlex.split(meta.command)
    if "--preset" not in words or words.index("--preset") + 1 >= len(words):
        return None
    from service.core.presets import PRESETS

    preset = PRESETS.get(words[words.index("--preset") + 1])
    if preset is None or "dataset" not in preset:
        return None
    epochs = meta.extra.get("epochs") or (preset.get("budget") or {}).get("epochs")
    threads = max(1, int((preset.get("resources") or {}).get("cpus", 1)))
    return {"backbone": meta.backbone, "epochs": int(epochs), "dataset": preset["dataset"],
            "threads": threads}


def retrain(run: dict[str, Any], schedule: Schedule, seed: int
            ) -> tuple[list[float], float]:
    """Train `schedule` from scratch on the recording's settings and `seed`, as the
    service's final test does: the metric of every epoch and the test accuracy after the
    last (NaN from a diverged epoch on)."""
    from service.backends.tune.trainable import replay

    config = {**schedule.at(1), "run": {**run, "seed": int(seed), "epochs": len(schedule)}}
    values: list[float] = []
    test = math.nan
    for trainer, row, splits in replay(config, schedule):
        values.append(float(row["val_acc"]) if not row["diverged"] else math.nan)
        if trainer.epoch == len(schedule) and not row["diverged"]:
            test = float(trainer.evaluate(splits.test_x, splits.test_y)[0])
    values += [math.nan] * (len(schedule) - len(values))
    return values, test


def verify(table: ReplayTable, schedule: Schedule, store: SwitchStore | None = None
           ) -> tuple[float, float, list[tuple[str, int, list[float], float]]]:
    """The schedule's seed-mean metric after its last epoch and test accuracy, retrained on
    every recorded seed (read from the store where it holds the curve), and the curves it
    had to train (for the caller to add to the store)."""
    run = recording_run(table)
    if run is None:
        raise ValueError(f"table {table.name!r} does not say how it was recorded")
    if table.metric != "val_acc":
        raise ValueError(f"table {table.name!r}: only val_acc tables can be retrained")
    if len(schedule.runs) == 1 and len(schedule) <= table.epochs:
        # no switch: the table is this schedule's own real training (a recording repeats)
        config = table.snap(schedule.at(1))[0]
        test = float(np.mean(table.test[config])) if table.test is not None and \
            len(schedule) == table.epochs else math.nan
        return table.value(config, len(schedule)), test, []
    text = canonical(schedule)
    finals, tests, trained = [], [], []
    for seed in table.seeds:
        found = store.get(text, int(seed)) if store is not None else None
        if found is None:
            values, test = retrain(run, schedule, int(seed))
            trained.append((text, int(seed), values, test))
            found = (np.asarray(values, float), test)
        finals.append(float(found[0][-1]))
        tests.append(found[1])
    with np.errstate(invalid="ignore"):
        return float(np.mean(finals)), float(np.mean(tests)), trained


def _retrain_job(path: str, text: str) -> list[tuple[str, int, list[float], float]]:
    table = cached_table(path)
    return verify(table, Schedule.from_json(text), store_of(path))[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.backends.replay.verify",
        description="Retrain sampled switch schedules of a recorded table and print each "
                    "continuation model's error against them.")
    parser.add_argument("--table", required=True, help="a table recorded by `record`")
    parser.add_argument("--sample", type=int, default=0,
                        help="switch schedules (A, epoch, B) to retrain first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    table = cached_table(args.table)
    if recording_run(table) is None:
        print(f"table {table.name!r} does not say how it was recorded: cannot retrain")
        return 2
    store = SwitchStore(table)
    todo = [canonical(s) for s in sample_switches(table, args.sample, args.seed)]
    todo = [t for t in dict.fromkeys(todo)
            if any(store.get(t, int(s)) is None for s in table.seeds)]
    if todo:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        print(f"retraining {len(todo)} schedules x {len(table.seeds)} seeds", flush=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            for done, curves in enumerate(pool.map(_retrain_job, [table.path] * len(todo),
                                                   todo), 1):
                store.add(curves)
                if done % 10 == 0 or done == len(todo):
                    print(f"  {done}/{len(todo)}", flush=True)
    print(f"table {table.name}: {len(store.curves)} stored curves ({store.path})")
    print(format_errors(table, model_errors(table, store)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
