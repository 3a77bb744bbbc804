"""An honest comparison of searchers over many seeds (replays, or real runs with enough
seeds): final regret to the table's optimum (mean, interquartile mean, bootstrap 95% CI),
normalised regret, the chosen configuration's test accuracy, evaluations to a target,
average rank with a Friedman test and a Nemenyi critical-difference diagram, paired tests
against the best searcher, and best-so-far regret against trials and simulated time
(median, interquartile band).

A failure is a result: a cell that failed (a diverged choice, no finite result, a crash)
scores its table's worst configuration and counts in every mean, interval, rank and test.
A verdict needs a paired test on the same (table, seed) blocks: each searcher against the
best by a Wilcoxon signed-rank test, Holm-corrected, and at least `MIN_BLOCKS` blocks;
otherwise it is a tie. In-trial rows scored by an unverified continuation model whose error
is unknown or not below `MODEL_ERROR_MAX` points are shown apart, unranked. Statistics come
from scipy (`bootstrap`, `trim_mean`, `rankdata`, `wilcoxon`, `friedmanchisquare`,
`studentized_range`); IQM with bootstrap CIs after Agarwal et al. (2021).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core.layout import CELL_GLOB, ROWS_FILE, SUMMARY_FILE, parse_cell_name
from service.reports.load import _read_json, regular_file, unreadable

CURVE_COLUMNS = ("trial_index", "unix_time", "regret", "trials_started", "epochs_total")
ALPHA = 0.05
MIN_BLOCKS = 20
"""Fewest (table, seed) blocks for a ranking claim; with fewer every verdict is a tie."""
MODEL_ERROR_MAX = 1.0
"""An unverified in-trial row is ranked only if its model's error is below this (points)."""
ZERO_METHOD = "zsplit"
"""Wilcoxon's handling of zero differences (two searchers that chose the same
configuration): their ranks split between both signs, evidence of no difference."""
NO_RESULT = "no finite final regret"
"""The failure reason of an old cell that has no `failed` field but no finite result."""
APPROXIMATIONS = (
    "Replay approximations: a trial whose hyperparameters change inside it (a controller's "
    "switch, a PBT/PB2 clone) continues the new configuration's recorded curve from the "
    "epoch where that curve first reaches the trial's current value (`replay.continuation: "
    "reach`; `epoch` continues from the current epoch, the old model; `restart` from epoch "
    "1). Configurations off the table's grid are snapped to the nearest recorded value "
    "(`snapped` counts them). In-trial rows are ranked by verified scores (the chosen "
    "schedule retrained for real, `verified`) where the table can be retrained, with the "
    "model's score and the gap beside them (`modelled`, `gap`). Failures (a diverged choice, "
    "a cell with no finite result, a crash) score the table's worst configuration "
    "(normalised regret 1). Simulated time counts the recorded epochs' seconds plus the "
    "searcher's and scheduler's own compute (`searcher_s`); at most the experiment's slots "
    "train at once.")


def is_replay(folder: Path) -> bool:
    """Whether an experiment folder holds replay cells."""
    for d in folder.glob(CELL_GLOB):
        if (d / ROWS_FILE).is_file():
            return True
        try:
            summary = d / SUMMARY_FILE
            if summary.is_file() and json.loads(summary.read_text(encoding="utf-8-sig")
                                                ).get("backend") == "replay":
                return True
        except (OSError, ValueError, AttributeError):  # unreadable, or not a JSON object
            continue
    return False


def load_replay(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every cell's summary (skipped ones included, failures scored by `with_failures`)
    and best-so-far curve rows."""
    summaries, curves = [], []
    for d in sorted(folder.glob(CELL_GLOB)):
        cell = parse_cell_name(d.name)
        if cell is None:
            continue
        summary = _read_json(d / SUMMARY_FILE)
        if summary is None:
            continue
        if "skipped" not in summary and not all(
                isinstance(summary.get(k), (int, float)) for k in ("optimum", "worst")):
            unreadable(d / SUMMARY_FILE, "not a replayed cell's summary (no numeric optimum "
                       "and worst); left out of the report")
            continue
        summaries.append(summary)
        if regular_file(d / ROWS_FILE, "the cell counts in the ranking, its curve is left "
                        "out"):
            try:
                rows = pd.read_parquet(d / ROWS_FILE, columns=list(CURVE_COLUMNS))
            except Exception as err:  # pyarrow's errors have no common base
                unreadable(d / ROWS_FILE, f"not readable ({type(err).__name__}); the cell "
                           "counts in the ranking, its curve is left out")
                continue
            rows["searcher"], rows["backbone"], rows["seed"] = (cell.searcher, cell.backbone,
                                                                cell.seed)
            curves.append(rows)
    cells = with_failures(pd.DataFrame(summaries))
    rows = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return cells, rows


def _truthy(value: Any) -> bool:
    """A summary flag's truth: None, NaN (absent in a mixed frame), False and "" are not."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def with_failures(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells with every failure scored (idempotent): a non-skipped cell with a truthy
    `failed` (its reason) or a non-finite final regret gets the table's worst regret,
    |optimum - worst|, and normalised regret 1; `is_failed` marks it and `failed` holds the
    reason. test_acc stays as recorded (NaN: no chosen configuration)."""
    cells = cells.copy()
    if cells.empty:
        return cells
    if "skipped" not in cells:
        cells["skipped"] = np.nan
    if "failed" not in cells:
        cells["failed"] = None
    cells["failed"] = cells["failed"].astype(object)
    run = cells["skipped"].isna()
    if "final_regret" not in cells:  # no cell could run (every one skipped)
        cells["final_regret"] = np.nan
    regret = pd.to_numeric(cells["final_regret"], errors="coerce")
    flagged = cells["failed"].map(_truthy).astype(bool)
    no_result = ~np.isfinite(regret.to_numpy(float))
    failed = run & (flagged | no_result)
    cells.loc[failed & ~flagged, "failed"] = NO_RESULT
    cells["is_failed"] = failed
    if failed.any():
        worst = (cells["optimum"] - cells["worst"]).abs()
        cells.loc[failed, "final_regret"] = worst[failed]
        cells.loc[failed, "normalised_regret"] = 1.0
    return cells


def _ok(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells that ran (not skipped), failures scored."""
    cells = with_failures(cells)
    return cells[cells["skipped"].isna()] if "skipped" in cells else cells


def _ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean; NaN when any value is missing (a failure
    is scored before this, so nothing vanishes silently)."""
    from scipy import stats

    values = np.asarray(values, float)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan, math.nan
    if values.size < 2 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, confidence_level=1 - ALPHA, n_resamples=2000,
                          method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _iqm(values: np.ndarray) -> float:
    """Interquartile mean (25% trimmed each side); NaN when any value is missing."""
    from scipy import stats

    values = np.asarray(values, float)
    return float(stats.trim_mean(values, 0.25)) if values.size else math.nan


def scale_of(cells: pd.DataFrame) -> float:
    """Accuracy-like metrics in [0, 1] are shown in points (x100)."""
    top = cells["optimum"].abs().max() if "optimum" in cells and not cells.empty else 0
    return 100.0 if top <= 1.0 else 1.0


def _in_trial(group: pd.DataFrame) -> bool:
    return "in_trial" in group and bool(group["in_trial"].map(_truthy).any())


def _model_error(group: pd.DataFrame, scale: float) -> float:
    """The continuation model's error on the group's table (largest over its cells,
    points); NaN when any cell's is unknown."""
    if "model_mae" not in group:
        return math.nan
    mae = pd.to_numeric(group["model_mae"], errors="coerce")
    return float(mae.max()) * scale if mae.notna().all() else math.nan


def _all_verified(group: pd.DataFrame) -> bool:
    # a cell without `verified` (a folder from before the field) counts as verified, so
    # old folders still rank as they did
    if "verified" not in group:
        return True
    return bool(group["verified"].map(lambda v: True if v is None or (
        isinstance(v, float) and math.isnan(v)) else bool(v)).all())


def shown_apart(cells: pd.DataFrame, scale: float | None = None) -> pd.DataFrame:
    """The in-trial rows (searcher, table) not ranked: not all cells verified and the
    model's error unknown or not below `MODEL_ERROR_MAX` points; with their model's score
    and error."""
    ok = _ok(cells)
    scale = scale_of(ok) if scale is None else scale
    out = []
    if ok.empty or "in_trial" not in ok:
        return pd.DataFrame(columns=["searcher", "backbone"])
    for (searcher, table), group in ok.groupby(["searcher", "backbone"], sort=False):
        if not _in_trial(group) or _all_verified(group):
            continue
        error = _model_error(group, scale)
        if error < MODEL_ERROR_MAX:
            continue
        modelled = (group["modelled_regret"] if "modelled_regret" in group
                    else group["final_regret"])
        out.append({"searcher": searcher, "backbone": table, "seeds": len(group),
                    "failures": int(group["is_failed"].sum()),
                    "modelled": float(pd.to_numeric(modelled, errors="coerce").mean()) * scale,
                    "model_error": error})
    return pd.DataFrame(out, columns=["searcher", "backbone", "seeds", "failures",
                                      "modelled", "model_error"])


def ranked(cells: pd.DataFrame, scale: float | None = None) -> pd.DataFrame:
    """The cells that take part in rankings: without the searchers `shown_apart` on any
    table of `cells` (pass one table's cells for that table's ranking)."""
    ok = _ok(cells)
    apart = shown_apart(ok, scale)
    return ok[~ok["searcher"].isin(apart["searcher"])] if not apart.empty else ok


def summary_table(cells: pd.DataFrame, by: tuple[str, ...] = ("searcher",),
                  scale: float | None = None) -> pd.DataFrame:
    """One row per searcher (per `by`): seeds, failures, final regret (mean, IQM, 95% CI),
    normalised regret, test accuracy (over cells with a chosen configuration), evaluations
    to target, snaps, times; searcher compute and, for in-trial rows, the model's score,
    its gap to the verified one and its error, when the cells record them."""
    ok = _ok(cells)
    scale = scale_of(ok) if scale is None else scale
    rows = []
    for key, group in ok.groupby(list(by), sort=False):
        regret = group["final_regret"].to_numpy(float) * scale
        low, high = _ci(regret)
        reached = group["evals_to_target"].notna()
        entry = {
            **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
            "seeds": len(group), "failures": int(group["is_failed"].sum()),
            "regret_mean": float(np.mean(regret)), "regret_iqm": _iqm(regret),
            "regret_ci_low": low, "regret_ci_high": high,
            "normalised_regret": float(group["normalised_regret"].to_numpy(float).mean()),
            # undefined for a failure (no chosen configuration): averaged over the rest
            "test_acc": float(np.nanmean(group["test_acc"].to_numpy(float))) * scale
            if group["test_acc"].notna().any() else math.nan,
            "evals_to_target": float(group.loc[reached, "evals_to_target"].median())
            if reached.any() else math.nan,
            "target_reached": float(reached.mean()),
            "epochs": float(group["epochs"].mean()),
            "snapped_pct": 100 * float(group["snapped"].sum() / max(1, group["lookups"].sum())),
            "simulated_s": float(group["simulated_s"].mean()),
            "wall_s": float(group["wall_time_s"].sum()),
        }
        if "searcher_s" in ok:
            entry["searcher_s"] = float(pd.to_numeric(group["searcher_s"]).mean())
        if "modelled_regret" in ok or "model_gap" in ok:
            trial = _in_trial(group)
            for column, name in (("modelled_regret", "modelled"), ("model_gap", "gap")):
                values = pd.to_numeric(group.get(column, pd.Series(dtype=float)),
                                       errors="coerce")
                entry[name] = (float(values.mean()) * scale
                               if trial and values.notna().any() else math.nan)
            entry["model_error"] = (_model_error(group, scale)
                                    if trial and not _all_verified(group) else math.nan)
        rows.append(entry)
    # no cell (no (table, seed) block every searcher ran): an empty table, not a crash
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*by, "seeds", "failures"])


ANYTIME_FRACTIONS = (0.25, 0.5, 1.0)
"""Where the anytime table reads the best-so-far regret: these fractions of the trials."""


def anytime_table(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per searcher, over the (table, seed) blocks every searcher ran: the best-so-far
    regret after 25%, 50% and 100% of the epochs the cell trained (its compute; mean and
    95% CI: how fast each converges at equal budget; no finite result yet scores the
    table's worst configuration), and the spread of the final regret over seeds (standard
    deviation within a table, averaged over the tables: how much a result depends on the
    seed)."""
    blocks = common_blocks(cells)
    if rows.empty or blocks.empty:
        return pd.DataFrame()
    scale = scale_of(blocks)
    keep = blocks[["backbone", "seed"]].drop_duplicates()
    rows = rows[rows["searcher"].isin(blocks["searcher"])].merge(keep, on=["backbone", "seed"])
    worst = (blocks["optimum"] - blocks["worst"]).abs().groupby(blocks["backbone"]).first()
    out = []
    for searcher, group in rows.groupby("searcher", sort=False):
        entry: dict[str, Any] = {"searcher": searcher}
        for frac in ANYTIME_FRACTIONS:
            values = []
            for (table, _), cell in group.groupby(["backbone", "seed"]):
                spent = cell["epochs_total"].max()
                upto = cell[cell["epochs_total"] <= max(1, math.ceil(frac * spent))]
                best = float(upto["regret"].min()) if len(upto) else math.nan
                values.append((best if math.isfinite(best) else float(worst[table])) * scale)
            arr = np.asarray(values, float)
            low, high = _ci(arr)
            entry[f"regret_at_{int(frac * 100)}pct"] = (
                f"{np.mean(arr):.2f} [{low:.2f}, {high:.2f}]")
        final = blocks[blocks["searcher"] == searcher]
        sd = final.groupby("backbone")["final_regret"].std(ddof=1) * scale
        entry["seed_sd"] = float(sd.mean())
        out.append(entry)
    return pd.DataFrame(out)


def paired_table(cells: pd.DataFrame, rows: pd.DataFrame, pairs: list[str]) -> pd.DataFrame:
    """Each "a vs b" pair over the (table, seed) blocks both ran: the mean difference a - b
    of final regret (failures scored), of test accuracy (over blocks where both chose a
    configuration) and of the best-so-far regret after a quarter of the trials (95%
    bootstrap CIs over blocks, and whether the interval excludes 0); each one's median
    evaluations to target and the ratio b / a (a's speed-up); the seed spread of each
    (`anytime_table`) and the variance ratio (a / b)^2."""
    ok = _ok(cells)
    scale = scale_of(ok)
    out = []
    for pair in pairs:
        a, _, b = (x.strip() for x in pair.partition(" vs "))
        both = ok[ok["searcher"].isin([a, b])]
        both = both[both.groupby(["backbone", "seed"])["searcher"].transform("nunique") == 2]
        if both.empty:
            continue
        # dropna=False: a measure no cell reached (evals_to_target in a short run) stays,
        # as NaN, instead of vanishing from the table
        wide = both.pivot_table(index=["backbone", "seed"], columns="searcher",
                                values=["final_regret", "test_acc", "evals_to_target"],
                                aggfunc="first", dropna=False).dropna(how="all")
        entry: dict[str, Any] = {"a": a, "b": b, "blocks": len(wide)}
        for column, name in (("final_regret", "regret"), ("test_acc", "test_acc")):
            diff = (wide[column][a] - wide[column][b]).to_numpy(float) * scale
            if column == "test_acc":  # undefined where a cell failed: compare the rest
                diff = diff[np.isfinite(diff)]
            low, high = _ci(diff)
            mean = float(np.mean(diff)) if diff.size else math.nan
            entry[f"{name}_diff"] = f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"
            entry[f"{name}_separates"] = bool(low > 0 or high < 0)
        anytime = anytime_table(rows, both)
        if not anytime.empty:
            early = anytime.set_index("searcher")["regret_at_25pct"]
            entry["regret_at_25pct"] = f"{early[a]} vs {early[b]}"
            sd = anytime.set_index("searcher")["seed_sd"]
            entry["seed_sd"] = f"{sd[a]:.2f} vs {sd[b]:.2f}"
            entry["variance_ratio"] = float((sd[a] / sd[b]) ** 2) if sd[b] > 0 else math.nan
            low, high = _variance_ratio_ci(wide["final_regret"][[a, b]])
            entry["variance_ratio_ci"] = f"[{low:.2f}, {high:.2f}]"
        evals = wide["evals_to_target"]
        med_a, med_b = evals[a].median(), evals[b].median()
        entry["evals_to_target"] = f"{med_a:g} vs {med_b:g}"
        entry["reached"] = f"{evals[a].notna().mean():.0%} vs {evals[b].notna().mean():.0%}"
        entry["speedup"] = float(med_b / med_a) if med_a > 0 else math.nan
        out.append(entry)
    return pd.DataFrame(out)


def _variance_ratio_ci(regret: pd.DataFrame, resamples: int = 2000, seed: int = 0
                       ) -> tuple[float, float]:
    """95% percentile bootstrap of (mean over tables of a's seed sd / the same of b's)^2,
    resampling seeds within each table, the same seeds for both (paired)."""
    rng = np.random.default_rng(seed)
    tables = [g.to_numpy(float) for _, g in regret.groupby(level="backbone")]
    ratios = []
    for _ in range(resamples):
        sd_a, sd_b = [], []
        for values in tables:
            pick = values[rng.integers(len(values), size=len(values))]
            sd_a.append(np.std(pick[:, 0], ddof=1))
            sd_b.append(np.std(pick[:, 1], ddof=1))
        if np.mean(sd_b) > 0:
            ratios.append((np.mean(sd_a) / np.mean(sd_b)) ** 2)
    if not ratios:
        return math.nan, math.nan
    low, high = np.percentile(ratios, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def common_blocks(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells (failures scored) of the (table, seed) blocks every searcher ran: an
    overall mean over tables only compares searchers on the same problems."""
    ok = _ok(cells)
    if ok.empty:
        return ok
    k = ok["searcher"].nunique()
    sizes = ok.groupby(["backbone", "seed"])["searcher"].transform("nunique")
    return ok[sizes == k]


def _wide(cells: pd.DataFrame) -> pd.DataFrame:
    """Final regret per (table, seed) block (rows) and searcher (columns), only the blocks
    every searcher ran (failures are scored, so a NaN here is a cell that did not run)."""
    if cells.empty:
        return pd.DataFrame()
    return cells.pivot_table(index=["backbone", "seed"], columns="searcher",
                             values="final_regret", aggfunc="first").dropna()


def ranks(cells: pd.DataFrame, scale: float | None = None
          ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Average rank of each ranked searcher (`ranked`) over the blocks (table, seed) every
    one ran (rank 1 = lowest final regret, a failure the table's worst, ties averaged), the
    Friedman test across them and the Nemenyi critical difference at `ALPHA`."""
    from scipy import stats

    wide = _wide(ranked(cells, scale))
    k, n = wide.shape[1], wide.shape[0]
    if k < 2 or n < 2:
        return pd.DataFrame(columns=["searcher", "avg_rank"]), {"blocks": n, "k": k}
    ranked_ = np.apply_along_axis(stats.rankdata, 1, wide.to_numpy())
    avg = pd.DataFrame({"searcher": wide.columns, "avg_rank": ranked_.mean(axis=0)})
    info: dict[str, Any] = {"blocks": n, "k": k}
    if k >= 3:
        res = stats.friedmanchisquare(*wide.to_numpy().T)
        info.update(friedman_chi2=float(res.statistic), friedman_p=float(res.pvalue))
    q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2)
    info["critical_difference"] = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return avg.sort_values("avg_rank").reset_index(drop=True), info


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over the finite ones; NaN
    stays NaN): the i-th smallest of m is max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def _signed_rank(diff: np.ndarray) -> tuple[float, int]:
    """Wilcoxon signed-rank p-value of paired differences (`ZERO_METHOD`; all zero: 1)
    and the direction the ranks favour (+1: the differences are mostly positive)."""
    from scipy import stats

    if np.all(diff == 0):
        return 1.0, 0
    ranks_ = stats.rankdata(np.abs(diff))
    direction = int(np.sign(ranks_[diff > 0].sum() - ranks_[diff < 0].sum()))
    with warnings.catch_warnings():  # small samples with zeros fall back to the normal
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(diff, zero_method=ZERO_METHOD)
    return float(res.pvalue), direction


def verdicts(cells: pd.DataFrame, *, min_blocks: int = MIN_BLOCKS, alpha: float = ALPHA,
             scale: float | None = None) -> tuple[pd.DataFrame, str]:
    """Each searcher in `cells` against the best (lowest mean final regret over the
    (table, seed) blocks every one ran), paired on those blocks: the mean difference
    searcher - best with its 95% bootstrap CI (`diff_vs_best`, `diff_ci_low/high`), the
    Wilcoxon signed-rank p-value Holm-corrected over the k - 1 comparisons (`p_holm`) and
    the verdict: `best`; `worse`/`better` when p_holm < alpha (direction of the signed
    ranks); `tie` otherwise, and always with fewer than `min_blocks` blocks. Also one
    sentence for the report saying what was tested and why a tie."""
    ok = _ok(cells)
    scale = scale_of(ok) if scale is None else scale
    columns = ["searcher", "verdict", "p_holm", "diff_vs_best", "diff_ci_low", "diff_ci_high"]
    if ok.empty:
        return pd.DataFrame(columns=columns), "No searchers."
    wide = _wide(ok)
    n, names = len(wide), sorted(ok["searcher"].unique())
    means = (wide.mean() if n else ok.groupby("searcher")["final_regret"].mean())
    best = str(means.idxmin())
    others = [s for s in names if s != best]
    raw, diffs = [], {}
    for name in others:
        diff = ((wide[name] - wide[best]).to_numpy(float) * scale if name in wide
                else np.array([]))
        diffs[name] = diff
        raw.append(_signed_rank(diff) if diff.size >= 2 else (math.nan, 0))
    adjusted = holm([p for p, _ in raw])
    claim = n >= max(2, min_blocks)
    out = [{"searcher": best, "verdict": "best", "p_holm": math.nan, "diff_vs_best": 0.0,
            "diff_ci_low": 0.0, "diff_ci_high": 0.0}]
    for name, (_, direction), p in zip(others, raw, adjusted, strict=True):
        diff = diffs[name]
        low, high = _ci(diff)
        verdict = "tie"
        if claim and p < alpha:
            verdict = "worse" if direction > 0 else "better"
        out.append({"searcher": name, "verdict": verdict, "p_holm": float(p),
                    "diff_vs_best": float(np.mean(diff)) if diff.size else math.nan,
                    "diff_ci_low": low, "diff_ci_high": high})
    frame = pd.DataFrame(out, columns=columns)
    if not others:
        return frame, "Only one searcher: nothing to compare."
    test = (f"Paired Wilcoxon signed-rank tests (zero_method={ZERO_METHOD}: zero differences "
            f"split between both signs) of each searcher against the best, {best}, over "
            f"{n} (table, seed) blocks, Holm-corrected over {len(others)} "
            f"comparison{'s' if len(others) > 1 else ''} at alpha {alpha}")
    if n < 2:
        return frame, f"{test}: too few blocks for a paired test; every other verdict is tie."
    if not claim:
        return frame, (f"{test}: fewer than {min_blocks} blocks: no ranking claim; every "
                       f"other verdict is tie whatever p_holm says.")
    counts = frame["verdict"].value_counts()
    said = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("worse", "better", "tie"))
    return frame, f"{test}: {said}."


def curves(rows: pd.DataFrame, axis: str, points: int = 60) -> pd.DataFrame:
    """Best-so-far regret on a common grid of `axis` (trials_started or unix_time, the
    simulated clock) per searcher and table: median and interquartile band over seeds."""
    out = []
    for (table, searcher), group in rows.groupby(["backbone", "searcher"], sort=False):
        top = rows.loc[rows["backbone"] == table, axis].max()
        grid = np.linspace(0, top, points) if axis == "unix_time" else np.arange(1, top + 1)
        per_seed = []
        for _, seed_rows in group.groupby("seed"):
            seed_rows = seed_rows.sort_values(["unix_time", "epochs_total"])
            x, y = seed_rows[axis].to_numpy(float), seed_rows["regret"].to_numpy(float)
            idx = np.searchsorted(x, grid, side="right") - 1
            per_seed.append(np.where(idx >= 0, y[np.clip(idx, 0, None)], np.nan))
        stack = np.vstack(per_seed)
        with warnings.catch_warnings():  # points before any seed's first result are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(stack, [25, 50, 75], axis=0)
        out.append(pd.DataFrame({"backbone": table, "searcher": searcher, axis: grid,
                                 "q25": q[0], "median": q[1], "q75": q[2]}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def plot_curves(rows: pd.DataFrame, out: Path, scale: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for axis, label in (("trials_started", "trials started"),
                        ("unix_time", "simulated time (s)")):
        data = curves(rows, axis)
        if data.empty:
            continue
        tables = list(dict.fromkeys(data["backbone"]))
        fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.5), squeeze=False)
        for ax, table in zip(axes[0], tables, strict=True):
            for searcher, g in data[data["backbone"] == table].groupby("searcher", sort=False):
                line = ax.plot(g[axis], g["median"] * scale, label=searcher, lw=1.4)[0]
                ax.fill_between(g[axis], g["q25"] * scale, g["q75"] * scale, alpha=0.12,
                                color=line.get_color())
            ax.set_title(table)
            ax.set_xlabel(label)
            ax.set_ylabel("best-so-far regret" + (" (points)" if scale == 100 else ""))
            ax.set_yscale("symlog", linthresh=0.5)
        axes[0][-1].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"regret_vs_{'trials' if axis == 'trials_started' else 'time'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_cd(avg: pd.DataFrame, info: dict[str, Any], path: Path) -> Path | None:
    """A critical-difference diagram: average ranks on one axis, a bar joining searchers
    closer than the critical difference (no significant difference between them)."""
    if avg.empty or "critical_difference" not in info:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, cd = len(avg), info["critical_difference"]
    ranks_ = avg["avg_rank"].to_numpy()
    fig, ax = plt.subplots(figsize=(9, 0.35 * k + 1.8))
    ax.set_xlim(1, k)
    ax.set_ylim(-(k + 2), 1.5)
    ax.axhline(0, color="black", lw=1)
    ax.set_yticks([])
    ax.xaxis.tick_top()
    for i, (name, r) in enumerate(zip(avg["searcher"], ranks_, strict=True)):
        y = -(i + 1)
        ax.plot([r, r], [0, y], color="grey", lw=0.6)
        ax.text(r, y, f" {name} ({r:.2f})", va="center", fontsize=8)
    ax.plot([1, 1 + cd], [1, 1], color="red", lw=2)
    ax.text(1, 1.2, f"CD = {cd:.2f}", fontsize=8, color="red")
    level = -(k + 0.5)
    for i in range(k):
        j = max(j for j in range(k) if ranks_[j] - ranks_[i] <= cd)
        if j > i and (i == 0 or ranks_[j] - ranks_[i - 1] > cd):
            ax.plot([ranks_[i], ranks_[j]], [level, level], color="black", lw=3)
            level -= 0.4
    title = f"average rank over {info['blocks']} (table, seed) blocks"
    if "friedman_p" in info:
        title += f"; Friedman p = {info['friedman_p']:.2g}"
    ax.set_title(title, fontsize=9, pad=18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(nothing ranked)"
    shown = table.copy()
    shown["regret (95% CI)"] = [
        f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in
        zip(shown["regret_mean"], shown["regret_ci_low"], shown["regret_ci_high"],
            strict=True)]
    shown["target reached"] = [f"{100 * v:.0f}%" for v in shown["target_reached"]]
    if "diff_vs_best" in shown:
        shown["diff_vs_best (95% CI)"] = [
            "" if v == "best" or not math.isfinite(m) else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            for v, m, lo, hi in zip(shown["verdict"], shown["diff_vs_best"],
                                    shown["diff_ci_low"], shown["diff_ci_high"], strict=True)]
    # the in-trial model's columns only where a shown row has them
    shown = shown.drop(columns=[c for c in ("modelled", "gap", "model_error")
                                if c in shown and shown[c].isna().all()])
    cols = [c for c in ("backbone", "searcher") if c in shown] + [
        "seeds", "failures", "regret (95% CI)", "regret_iqm", "normalised_regret", "test_acc",
        "evals_to_target", "target reached", "avg_rank", "verdict", "p_holm",
        "diff_vs_best (95% CI)", "modelled", "gap", "model_error", "epochs", "snapped_pct",
        "searcher_s", "simulated_s"]
    return shown[[c for c in cols if c in shown]].rename(columns={"backbone": "table"}
                                                       ).to_markdown(index=False,
                                                                     floatfmt=".3g")


def model_error_lines(cells: pd.DataFrame) -> list[str]:
    """Beside the in-trial rows: every continuation model's measured error on each table
    they ran on (against the retrained switch curves kept beside the table,
    service.backends.replay.verify); nothing for a table that is not here."""
    if "in_trial" not in cells or "table" not in cells:
        return []
    lines: list[str] = []
    in_trial = cells[cells["in_trial"].map(_truthy)]
    for path in sorted(in_trial["table"].dropna().unique()):
        if not Path(path).is_file():
            continue
        from service.backends.replay.switches import format_errors, model_errors, store_of
        from service.core.table import cached_table

        table = cached_table(str(path))
        errors = model_errors(table, store_of(table.path))
        label = in_trial.loc[in_trial["table"] == path, "backbone"].iloc[0]
        lines += [f"## Continuation models' error on table {label}", "",
                  "What each model predicts for a schedule that switches, against that "
                  "schedule retrained for real on every recorded seed (the table's switch "
                  "curves; final value, points for accuracy, 95% bootstrap CI):", "",
                  format_errors(table, errors), ""]
    return lines


def _paired_of(folder: Path) -> list[str]:
    """The experiment's `replay.paired` pairs (from its stored config)."""
    try:
        config = json.loads((folder / "experiment_config.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return []
    return list((config.get("replay") or {}).get("paired") or [])


def _with_verdicts(table: pd.DataFrame, cells: pd.DataFrame, scale: float
                   ) -> tuple[pd.DataFrame, str]:
    """`table` sorted by mean regret with the paired verdict columns of `cells`."""
    if table.empty:
        return table, ("No (table, seed) block holds a result of every searcher (cells are "
                       "missing or unreadable): nothing is ranked or tested here.")
    judged, note = verdicts(cells, scale=scale)
    table = table.merge(judged, on="searcher", how="left")
    return table.sort_values("regret_mean").reset_index(drop=True), note


SPACE_TEXT = {
    "grid": "grid: every searched dimension a choice among the table's recorded values, so "
            "nothing is snapped (PB2, a GP over continuous bounds, keeps the ranges and is "
            "snapped)",
    "continuous": "continuous: the tables' ranges, suggestions snapped to the nearest "
                  "recorded value (`snapped`)"}
"""What each `replay.space` searched, for the report's header."""


def space_sentence(cells: pd.DataFrame) -> str:
    """One sentence naming the space(s) the cells searched (`replay.space`); a cell written
    before the setting existed searched the continuous ranges."""
    if "space" in cells:
        spaces = cells["space"].where(cells["space"].notna(), "continuous")
    else:
        spaces = pd.Series(["continuous"] * len(cells), dtype=object)
    found = sorted(set(spaces)) or ["continuous"]
    if len(found) == 1:
        return f"Searched space (`replay.space`): {SPACE_TEXT.get(found[0], found[0])}."
    return ("Searched spaces differ between cells (`space` in cells.csv): "
            + "; ".join(SPACE_TEXT.get(f, f) for f in found) + ".")


def write_replay_report(folder: Path, out: Path) -> dict[str, Path]:
    """comparison.md/.csv (overall and per table), cells.csv (failures scored), the CD
    diagram and the best-so-far plots of one replay experiment folder."""
    cells, rows = load_replay(folder)
    if cells.empty or "searcher" not in cells:
        from service.core.api import ConfigError

        raise ConfigError(f"folder: {str(folder)!r} holds no readable replay cell (no "
                          "summary.json a replay writes); nothing written")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    cells.to_csv(out / "cells.csv", index=False)
    written["cells"] = out / "cells.csv"
    if "skipped" not in cells:
        cells["skipped"] = np.nan
    ok = _ok(cells)
    scale = scale_of(ok)
    apart = shown_apart(ok, scale)
    blocks = common_blocks(ranked(ok, scale))
    overall = summary_table(blocks, scale=scale)
    avg, info = ranks(ok, scale)
    overall = overall.merge(avg, on="searcher", how="left")
    overall, overall_note = _with_verdicts(overall, blocks, scale)
    parts, notes = [], {}
    for table, group in ok.groupby("backbone", sort=False):
        group = ranked(group, scale)
        summary = summary_table(group, by=("backbone", "searcher"), scale=scale)
        summary, notes[table] = _with_verdicts(summary, group, scale)
        parts.append(summary)
    per_table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    overall.to_csv(out / "comparison.csv", index=False)
    per_table.to_csv(out / "comparison_by_table.csv", index=False)
    skipped = cells[cells["skipped"].notna()].drop_duplicates(["searcher", "backbone"])
    unit = "points of the metric x100" if scale == 100 else "metric units"
    lines = [
        "# Replay comparison: final regret to each table's optimum",
        "",
        f"Regret in {unit} (lower is better), over seeds; 95% CI by bootstrap of the mean; "
        "IQM = interquartile mean; normalised regret = regret / (optimum - worst "
        "configuration); failures = cells that failed (a diverged choice, no finite result, "
        "a crash): each scores the table's worst configuration (normalised regret 1) and "
        "counts in every mean, interval, rank and test; test_acc = the chosen "
        "configuration's recorded test accuracy, averaged over the cells that have one (a "
        "failure has none); evals_to_target = trials started until a result reached the "
        "best 5% of the table (median over the seeds that reached it); verdict = paired "
        "Wilcoxon signed-rank test against the best on the same (table, seed) blocks, "
        f"Holm-corrected (p_holm): `worse`/`better` when it separates at p < {ALPHA} over "
        f"at least {MIN_BLOCKS} blocks, otherwise `tie`; diff_vs_best = mean paired "
        "difference to the best (95% bootstrap CI); modelled = an in-trial row's regret by "
        "the continuation model, gap = model minus verified (retrained) value, model_error "
        "= the model's mean absolute error where the row is not verified; epochs = epochs "
        "trained per cell (the budget is an upper bound: EMERALD-O's early stopping and "
        "diverged trials leave some unused); searcher_s = the searcher's and scheduler's "
        "compute per cell; simulated_s = simulated wall time per cell (population methods "
        "run their members side by side).",
        "",
        space_sentence(cells),
        "",
        "## All tables",
        "",
        f"Over the {len(blocks[['backbone', 'seed']].drop_duplicates())} (table, seed) blocks "
        "every ranked searcher ran.",
        "",
        _fmt_table(overall),
        "",
        overall_note,
        "",
    ]
    if "friedman_p" in info:
        lines += [f"Friedman test over {info['blocks']} (table, seed) blocks and {info['k']} "
                  f"searchers: chi2 = {info['friedman_chi2']:.1f}, p = "
                  f"{info['friedman_p']:.3g}; Nemenyi critical difference of average ranks "
                  f"at alpha {ALPHA}: {info['critical_difference']:.2f}.", ""]
    anytime = anytime_table(rows, ranked(ok, scale))
    if not anytime.empty:
        anytime = anytime.set_index("searcher").reindex(overall["searcher"]).reset_index()
        anytime.to_csv(out / "anytime.csv", index=False)
        lines += ["## Anytime regret and spread over seeds", "",
                  "Best-so-far regret after 25%, 50% and all of the epochs each cell "
                  "trained (mean [95% CI] over the same blocks; a population's members "
                  "train side by side, so its early columns are half-trained networks; no "
                  "finite result yet scores the table's worst configuration); "
                  "seed_sd = standard deviation of the final regret "
                  "over seeds within a table, averaged over the tables.", "",
                  anytime.to_markdown(index=False, floatfmt=".3g"), ""]
    pairs = _paired_of(folder)
    paired = paired_table(cells, rows, pairs) if pairs else pd.DataFrame()
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)
        lines += ["## Paired comparisons", "",
                  "a - b over the (table, seed) blocks both ran (95% bootstrap CI; "
                  "`separates`: the interval excludes 0, descriptive, not a verdict); "
                  "evals_to_target medians and speedup = b's / a's; seed_sd as above, "
                  "variance_ratio = (a's / b's)^2 with a 95% bootstrap interval over seeds "
                  "(paired).",
                  "", paired.to_markdown(index=False, floatfmt=".3g"), ""]
    for table, group in per_table.groupby("backbone", sort=False):
        lines += [f"## Table {table}", "", _fmt_table(group.drop(columns="backbone")), "",
                  notes[table], ""]
    if not apart.empty:
        apart.to_csv(out / "unverified.csv", index=False)
        shown = apart.rename(columns={"backbone": "table"})
        shown["model_error"] = [f"{e:.2f}" if math.isfinite(e) else "error unknown"
                                for e in shown["model_error"]]
        lines += ["## In-trial rows not verified (shown apart)", "",
                  "Scored by the continuation model only (the chosen schedule not retrained) "
                  f"and the model's error unknown or not below {MODEL_ERROR_MAX:g} point: "
                  "unverified, so left out of every ranked table, rank and test above.", "",
                  shown.to_markdown(index=False, floatfmt=".3g"), ""]
    failed = ok[ok["is_failed"]]
    if not failed.empty:
        lines += ["## Failed cells", ""]
        for (searcher, table, reason), group in failed.groupby(
                ["searcher", "backbone", "failed"], sort=False):
            seeds = ", ".join(str(s) for s in sorted(group["seed"]))
            lines.append(f"- {searcher} on {table}, seed{'s' if len(group) > 1 else ''} "
                         f"{seeds}: {reason}")
        lines.append("")
    if not skipped.empty:
        lines += ["## Entries that cannot run on a table", ""]
        lines += [f"- {r.searcher} on {r.backbone}: {r.skipped}" for r in skipped.itertuples()]
        lines.append("")
    lines += model_error_lines(ok)
    lines += [APPROXIMATIONS, ""]
    (out / "comparison.md").write_text("\n".join(lines))
    written["comparison"] = out / "comparison.md"
    cd = plot_cd(avg, info, out / "critical_difference.png")
    if cd:
        written["critical_difference"] = cd
    if not rows.empty:
        for path in plot_curves(rows, out, scale):
            written[path.stem] = path
    from service.reports.pareto import write_pareto_section  # it reuses this module

    written.update(write_pareto_section(folder, out))  # with objectives only
    return written
