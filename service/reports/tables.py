"""The report's tables, from the frames `load` reads: per searcher the work done
(`searchers_table`), EMERALD-O's Table 9 and Table 8 views, the generalization metrics of
section 6.4, and the Table 9 row labels and orderings across experiments.

Table 9 (seed 000 section 6.3): rows = searchers, columns = backbones, each cell the best
validation accuracy as mean +- 95% CI over seeds and the test accuracy of the chosen config.
Table 8 (section 6.2): grid against Bayesian optimisation on VGG16 / VGG19, the families
named by the registry (`Entry.table8`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core import registry
from service.core.layout import CONFIG_FILE
from service.reports.load import AUGMENT_HP, _config_lists, _experiment_name

SEARCHER_COLUMNS = ["experiment", "searcher", "cells", "trials", "errored", "epochs",
                    "trial_time_s", "wall_time_s", "wall_from_timestamps", "best_val_acc"]

TABLE8_COLUMNS = (("grid_search", "grid"), ("bayesian", "bayesian"))
"""Table 8's value columns and the registry family (`Entry.table8`) each one shows."""


def searchers_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and searcher: cells (Tune experiments), trials run, trials errored,
    epochs trained, total trial time and wall time (both summed over cells, which may have
    run side by side), cells timed from result timestamps (no summary.json), best val acc."""
    if cells.empty:
        return pd.DataFrame(columns=SEARCHER_COLUMNS)
    table = cells.groupby(["experiment", "searcher"], sort=False).agg(
        cells=("cell", "count"), trials=("trials", "sum"), errored=("errored", "sum"),
        epochs=("epochs", "sum"), trial_time_s=("trial_time_s", "sum"),
        wall_time_s=("wall_time_s", lambda s: s.sum(min_count=1)),
        wall_from_timestamps=("wall_from", lambda s: int((s == "timestamps").sum())),
        best_val_acc=("best_val_acc", "max"),
    ).reset_index()
    return table[SEARCHER_COLUMNS]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a t-based 95% confidence interval (0 for a single seed)."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), 0.0
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean()), float(half)


def table9(trials: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Rows = searchers, columns = backbones; per cell the best validation accuracy (%)
    mean and CI over seeds, the test accuracy (%) of the chosen config, and the seeds."""
    if trials.empty:
        return pd.DataFrame()
    best = trials.groupby(["searcher", "backbone", "seed"])["best_val_acc"].max().reset_index()
    rows = []
    for (searcher, backbone), df in best.groupby(["searcher", "backbone"], sort=False):
        mean, half = mean_ci95(df["best_val_acc"].tolist())
        test_values = tests[(tests.searcher == searcher) & (tests.backbone == backbone)]
        test_mean, test_half = mean_ci95(test_values["test_acc"].astype(float).tolist())
        rows.append({"searcher": searcher, "backbone": backbone, "val_acc": 100 * mean,
                     "val_ci95": 100 * half, "test_acc": 100 * test_mean,
                     "test_ci95": 100 * test_half, "seeds": len(df)})
    return pd.DataFrame(rows)


def _family_entry(searchers: list[str], family: str) -> str | None:
    """The first registry entry (in registry order) of Table 8 family `family` that one of
    `searchers` runs (a labelled variant runs its entry)."""
    present = {registry.entry_name(s) for s in searchers}
    return next((name for name, entry in registry.entries().items()
                 if entry.table8 == family and name in present), None)


def table8(table: pd.DataFrame) -> pd.DataFrame:
    """Grid against Bayesian optimisation on the VGG backbones (EMERALD-O Table 8), from a
    Table 9 frame: per family the first registry entry of that family the table holds; per
    backbone the value of the first row whose searcher runs that entry. `bayesian_searcher`
    names the searcher shown (its entry where that backbone has no such row)."""
    if table.empty:
        return pd.DataFrame()
    searchers = list(dict.fromkeys(table.searcher))
    chosen = {family: _family_entry(searchers, family) for _, family in TABLE8_COLUMNS}
    runs = table.searcher.map(registry.entry_name)
    rows = []
    for backbone in dict.fromkeys(table.backbone):
        if not str(backbone).startswith("vgg"):
            continue
        row: dict[str, Any] = {"backbone": backbone}
        shown: dict[str, str | None] = {}
        for column, family in TABLE8_COLUMNS:
            match = table[(runs == chosen[family]) & (table.backbone == backbone)]
            row[column] = float(match.val_acc.iloc[0]) if not match.empty else math.nan
            shown[family] = match.searcher.iloc[0] if not match.empty else chosen[family]
        row["bayesian_searcher"] = shown["bayesian"]
        rows.append(row)
    return pd.DataFrame(rows)


def generalization(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """EMERALD-O section 6.4, per searcher: VTAG = |validation - training accuracy| of the
    chosen (best) trial of each cell, averaged; CAPC = coefficient of variation across
    backbones of the best validation accuracy (seed means); SVDAC = variance of the mean
    validation accuracy across augmentation conditions (final epochs of its trials)."""
    rows = []
    if trials.empty:
        return pd.DataFrame()
    for searcher, df in trials.groupby("searcher", sort=False):
        finite = df.dropna(subset=["best_val_acc"])  # a cell whose trials all diverged
        best = finite.loc[finite.groupby(["backbone", "seed"])["best_val_acc"].idxmax()]
        vtag = float((best["best_val_acc"] - best["train_acc_at_best"]).abs().mean())
        per_backbone = df.groupby(["backbone", "seed"])["best_val_acc"].max() \
            .groupby("backbone").mean()
        capc = float(per_backbone.std(ddof=0) / per_backbone.mean()) \
            if len(per_backbone) > 1 and per_backbone.mean() > 0 else math.nan
        ep = epochs[epochs.searcher == searcher]
        svdac = math.nan
        if not ep.empty:
            last = ep.sort_values("epoch").groupby(["backbone", "seed", "trial"]).tail(1)
            last = last[np.isfinite(pd.to_numeric(last["val_acc"], errors="coerce"))]
            if not last.empty:
                cond = last[list(AUGMENT_HP)].astype(str).agg("|".join, axis=1)
                means = last.groupby(cond)["val_acc"].mean()
                svdac = float(means.var(ddof=0)) if len(means) > 1 else 0.0
        rows.append({"searcher": searcher, "VTAG": vtag, "CAPC": capc,
                     "CAPC_pct": 100 * capc, "SVDAC": svdac,
                     "conditions": int(len(means)) if not ep.empty and not last.empty else 0})
    return pd.DataFrame(rows)


def row_labels(cells: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Table 9 row label per (experiment, searcher): the searcher's name, or
    `experiment/searcher` when the searcher ran the same backbone in more than one experiment
    (not only the same seed: a cell's mean and CI over seeds must come from one experiment's
    budget and data). Such a searcher is labelled in every experiment it ran in; a searcher
    that ran disjoint backbones in several experiments keeps one row."""
    if cells.empty:
        return {}
    pairs = cells[["experiment", "searcher", "backbone"]].drop_duplicates()
    runs = pairs.groupby(["searcher", "backbone"])["experiment"].nunique()
    clashing = {searcher for (searcher, _), n in runs.items() if n > 1}
    return {(e, s): f"{e}/{s}" if s in clashing else s
            for e, s in pairs[["experiment", "searcher"]].drop_duplicates().itertuples(
                index=False)}


def _relabel(df: pd.DataFrame, labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.copy()
    df["searcher"] = [labels.get((e, s), s) for e, s in zip(df.experiment, df.searcher,
                                                              strict=True)]
    return df


def _searchers_in_order(table: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """Experiments in folder order, searchers in the order each experiment listed them."""
    rank: dict[tuple[str, str], int] = {}
    for folder in folders:
        name = _experiment_name(folder)
        for searcher in _config_lists(folder)[0]:
            rank.setdefault((name, searcher), len(rank))
    experiments = [_experiment_name(f) for f in folders]
    keys = [(experiments.index(e) if e in experiments else len(experiments),
             rank.get((e, s), len(rank))) for e, s in zip(table.experiment, table.searcher,
                                                          strict=True)]
    order = sorted(range(len(table)), key=lambda i: keys[i])
    return table.iloc[order].reset_index(drop=True)


def _in_config_order(table: pd.DataFrame, storage: Path) -> pd.DataFrame:
    """Rows in the order the experiment listed searchers and backbones (else as found)."""
    if table.empty or not (storage / CONFIG_FILE).exists():
        return table
    searchers, backbones = _config_lists(storage)
    return _ordered(table, {"searcher": searchers, "backbone": backbones})


def _ordered(table: pd.DataFrame, rank: dict[str, list[str]]) -> pd.DataFrame:
    """Rows sorted by each column's position in its list (unlisted values last, stable)."""
    if table.empty:
        return table
    keys = [table[col].map(lambda v, order=order: order.index(v) if v in order else len(order))
            for col, order in rank.items()]
    order = sorted(range(len(table)), key=lambda i: tuple(k.iloc[i] for k in keys))
    return table.iloc[order].reset_index(drop=True)
