"""A table's switch curves: schedules retrained for real on the table's recording settings,
kept beside it in `<table>.switches.parquet`, and what they measure: each continuation
model's error of the final value against real training. Reading and measuring only (no
torch, no Ray), so reports can show the errors; the retraining is service.backends.replay.verify.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.replay.continuation import MODELS, splice
from service.core.api import Schedule
from service.core.table import ReplayTable, cached_table

SWITCH_SUFFIX = ".switches.parquet"
SCHEDULE, SEED = "schedule", "seed"


def switches_path(table: ReplayTable | str | Path) -> Path:
    """Where a table's retrained switch curves live: beside the table."""
    path = Path(table.path if isinstance(table, ReplayTable) else table)
    return path.with_name(path.stem + SWITCH_SUFFIX)


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
