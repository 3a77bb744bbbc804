"""Verified scores: an in-trial schedule retrained for real on a table's own recording
settings, and the continuation models' measured error against those retrainings.

A table recorded by `python -m service record` can be repeated: its metadata names the
backbone, the data and the epochs (and, for tables recorded before the `run` key existed,
the preset that made it), and the trainer is deterministic on the CPU, so a constant
schedule retrains to the table's own curve. Each retrained (schedule, seed) curve is kept
beside the table in `<table>.switches.parquet` (the table's switch curves): a replay that
meets the same schedule again reads it instead of training, and every stored curve that
switches measures the continuation models (`model_errors`).

`python -m service.backends.replay.verify --table T [--sample N]` retrains N sampled switch
schedules (A for e epochs, then B) and prints every model's error with its 95% CI.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.replay.continuation import MODELS, splice
from service.backends.replay.table import ReplayTable, cached_table
from service.core.api import Schedule

SWITCH_SUFFIX = ".switches.parquet"
SCHEDULE, SEED = "schedule", "seed"


def switches_path(table: ReplayTable | str | Path) -> Path:
    """Where a table's retrained switch curves live: beside the table."""
    path = Path(table.path if isinstance(table, ReplayTable) else table)
    return path.with_name(path.stem + SWITCH_SUFFIX)


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


def canonical(schedule: Schedule | str | dict[str, Any]) -> str:
    """One text per schedule (the store's key)."""
    if not isinstance(schedule, Schedule):
        schedule = Schedule.from_json(schedule)
    return schedule.to_json()


class SwitchStore:
    """A table's retrained curves: (schedule, seed) -> metric per epoch and test accuracy."""

    def __init__(self, table: ReplayTable) -> None:
        self.table = table
        self.path = switches_path(table)
        self.curves: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
        if self.path.is_file():
            import pandas as pd

            frame = pd.read_parquet(self.path)
            for (text, seed), rows in frame.groupby([SCHEDULE, SEED], sort=False):
                rows = rows.sort_values("epoch")
                test = rows["test_acc"].dropna()
                self.curves[(str(text), int(seed))] = (
                    rows[table.metric].to_numpy(float),
                    float(test.iloc[-1]) if len(test) else math.nan)

    def get(self, schedule: str, seed: int) -> tuple[np.ndarray, float] | None:
        return self.curves.get((schedule, seed))

    def add(self, curves: Iterable[tuple[str, int, Sequence[float], float]]) -> int:
        """Merge new curves and rewrite the file atomically; returns how many were new."""
        new = 0
        for text, seed, values, test in curves:
            if (text, int(seed)) not in self.curves:
                self.curves[(text, int(seed))] = (np.asarray(values, float), float(test))
                new += 1
        if new:
            self._write()
        return new

    def _write(self) -> None:
        import pandas as pd

        rows = []
        for (text, seed), (values, test) in sorted(self.curves.items()):
            for epoch, value in enumerate(values, 1):
                rows.append({SCHEDULE: text, SEED: seed, "epoch": epoch,
                             self.table.metric: float(value),
                             "test_acc": test if epoch == len(values) else math.nan})
        tmp = self.path.with_name(self.path.name + ".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(self.path)


@cache
def store_of(path: str) -> SwitchStore:
    """One store per table per process (a replay worker reads it once)."""
    return SwitchStore(cached_table(path))


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


def configs_of(table: ReplayTable, schedule: Schedule) -> list[int]:
    """The table configuration in force each epoch of a schedule."""
    return [table.snap(schedule.at(e))[0] for e in range(1, len(schedule) + 1)]


def modelled(table: ReplayTable, schedule: Schedule, model: str) -> float:
    """The seed-mean value a continuation model predicts after the schedule's last epoch."""
    configs = configs_of(table, schedule)
    values = [splice(table.metrics[table.metric], table.lengths, s, configs, model,
                     table.sign)[-1] for s in range(len(table.seeds))]
    return float(np.mean(values))


def model_errors(table: ReplayTable, store: SwitchStore | None = None,
                 models: Sequence[str] = MODELS) -> dict[str, dict[str, float]]:
    """Each model's error of the final value against the stored retrainings of schedules
    that switch (every recorded seed retrained): n, mean absolute error and bias (model -
    real), in metric units, with 95% bootstrap CIs. A diverged retraining counts as the
    table's worst value, as a failed cell does."""
    store = store if store is not None else SwitchStore(table)
    by_schedule: dict[str, dict[int, float]] = {}
    for (text, seed), (values, _) in store.curves.items():
        by_schedule.setdefault(text, {})[seed] = float(values[-1])
    seeds = [int(s) for s in table.seeds]
    pairs: dict[str, list[tuple[float, float]]] = {m: [] for m in models}
    for text, finals in by_schedule.items():
        schedule = Schedule.from_json(text)
        if len(schedule.runs) < 2 or any(s not in finals for s in seeds):
            continue
        _, worst = table.optimum(len(schedule))
        real = float(np.mean([v if math.isfinite(v) else worst for v in finals.values()]))
        for model in models:
            value = modelled(table, schedule, model)
            pairs[model].append((value if math.isfinite(value) else worst, real))
    return {model: _error_stats(np.asarray(p, float).reshape(-1, 2))
            for model, p in pairs.items()}


def _error_stats(pairs: np.ndarray) -> dict[str, float]:
    from scipy import stats

    n = len(pairs)
    out: dict[str, float] = {"n": n}
    if n == 0:
        return {**out, "mae": math.nan, "bias": math.nan, "mae_low": math.nan,
                "mae_high": math.nan, "bias_low": math.nan, "bias_high": math.nan}
    diff = pairs[:, 0] - pairs[:, 1]
    for name, values in (("mae", np.abs(diff)), ("bias", diff)):
        out[name] = float(values.mean())
        if n >= 2 and not np.all(values == values[0]):
            ci = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile",
                                 random_state=0).confidence_interval
            out[f"{name}_low"], out[f"{name}_high"] = float(ci.low), float(ci.high)
        else:
            out[f"{name}_low"] = out[f"{name}_high"] = out[name]
    return out


def sample_switches(table: ReplayTable, count: int, seed: int = 0) -> list[Schedule]:
    """Switch schedules (A for e epochs, then B) over the table's configurations, e drawn
    from 1 .. epochs-1: the design that measures the continuation models."""
    rng = np.random.default_rng(seed)
    finite = [c for c in range(len(table.configs))
              if np.all(table.lengths[c] == table.epochs)]
    out = []
    for _ in range(count):
        a, b = rng.choice(finite, size=2, replace=False)
        switch = int(rng.integers(1, table.epochs))
        schedule = Schedule()
        for epoch in range(1, table.epochs + 1):
            schedule.append(table.config_dict(int(a if epoch <= switch else b)))
        out.append(schedule)
    return out


def format_errors(table: ReplayTable, errors: dict[str, dict[str, float]]) -> str:
    """A markdown table of the models' errors (points for accuracy-like metrics)."""
    scale = 100.0 if table.metric == "val_acc" else 1.0
    lines = ["| continuation model | schedules | MAE (95% CI) | bias, model - real (95% CI) |",
             "|---|---:|---|---|"]
    for model, e in errors.items():
        lines.append(
            f"| {model} | {e['n']:.0f} | {scale * e['mae']:.1f} [{scale * e['mae_low']:.1f}, "
            f"{scale * e['mae_high']:.1f}] | {scale * e['bias']:+.1f} "
            f"[{scale * e['bias_low']:+.1f}, {scale * e['bias_high']:+.1f}] |")
    return "\n".join(lines)


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
