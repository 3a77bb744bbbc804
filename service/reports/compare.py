"""An honest comparison of searchers over many seeds (replays, or real runs with enough
seeds): final regret to the table's optimum (mean, interquartile mean, bootstrap 95% CI),
normalised regret, the chosen configuration's test accuracy, evaluations to a target,
average rank with a Friedman test and a Nemenyi critical-difference diagram, and
best-so-far regret against trials and simulated time (median, interquartile band).

All statistics come from scipy (`bootstrap`, `trim_mean`, `rankdata`,
`friedmanchisquare`, `studentized_range`); a searcher whose interval overlaps the best's is
reported as a tie with it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.layout import CELL_GLOB, ROWS_FILE, SUMMARY_FILE, parse_cell_name

CURVE_COLUMNS = ("trial_index", "unix_time", "regret", "trials_started", "epochs_total")
ALPHA = 0.05
APPROXIMATIONS = (
    "Replay approximations: a trial paused by a scheduler resumes on its own curve; a PBT/PB2 "
    "clone, and a trial whose controller changes hyperparameters, continue the new "
    "configuration's recorded curve from the current epoch (no weights carry over). "
    "Configurations off the table's grid are snapped to the nearest recorded value "
    "(`snapped` counts them). A plain configuration is scored by its seed-mean value after the "
    "full budget (what retraining it would give); an in-trial schedule by the seed-mean of its "
    "spliced curves, which may beat every fixed configuration (negative regret). Simulated "
    "time is the recorded epochs' seconds; searcher and controller compute is not counted.")


def is_replay(folder: Path) -> bool:
    """Whether an experiment folder holds replay cells."""
    for d in folder.glob(CELL_GLOB):
        if (d / ROWS_FILE).is_file():
            return True
        try:
            if json.loads((d / SUMMARY_FILE).read_text()).get("backend") == "replay":
                return True
        except (OSError, ValueError):
            continue
    return False


def load_replay(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every cell's summary (skipped ones included) and best-so-far curve rows."""
    summaries, curves = [], []
    for d in sorted(folder.glob(CELL_GLOB)):
        cell = parse_cell_name(d.name)
        if cell is None or not (d / SUMMARY_FILE).is_file():
            continue
        try:
            summary = json.loads((d / SUMMARY_FILE).read_text())
        except ValueError:
            continue
        summaries.append(summary)
        if (d / ROWS_FILE).is_file():
            rows = pd.read_parquet(d / ROWS_FILE, columns=list(CURVE_COLUMNS))
            rows["searcher"], rows["backbone"], rows["seed"] = (cell.searcher, cell.backbone,
                                                                cell.seed)
            curves.append(rows)
    cells = pd.DataFrame(summaries)
    rows = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return cells, rows


def _ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    from scipy import stats

    values = values[np.isfinite(values)]
    if values.size < 2 or np.all(values == values[0]):
        v = float(values[0]) if values.size else math.nan
        return v, v
    res = stats.bootstrap((values,), np.mean, confidence_level=1 - ALPHA, n_resamples=2000,
                          method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _iqm(values: np.ndarray) -> float:
    from scipy import stats

    values = values[np.isfinite(values)]
    return float(stats.trim_mean(values, 0.25)) if values.size else math.nan


def scale_of(cells: pd.DataFrame) -> float:
    """Accuracy-like metrics in [0, 1] are shown in points (x100)."""
    top = cells["optimum"].abs().max() if "optimum" in cells and not cells.empty else 0
    return 100.0 if top <= 1.0 else 1.0


def summary_table(cells: pd.DataFrame, by: tuple[str, ...] = ("searcher",)) -> pd.DataFrame:
    """One row per searcher (per `by`): seeds, final regret (mean, IQM, 95% CI),
    normalised regret, test accuracy, evaluations to target, snaps, times."""
    ok = cells[cells.get("skipped").isna()] if "skipped" in cells else cells
    scale = scale_of(ok)
    rows = []
    for key, group in ok.groupby(list(by), sort=False):
        regret = group["final_regret"].to_numpy(float) * scale
        low, high = _ci(regret)
        norm = group["normalised_regret"].to_numpy(float)
        reached = group["evals_to_target"].notna()
        rows.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
            "seeds": len(group),
            "regret_mean": float(np.nanmean(regret)), "regret_iqm": _iqm(regret),
            "regret_ci_low": low, "regret_ci_high": high,
            "normalised_regret": float(np.nanmean(norm)),
            "test_acc": float(np.nanmean(group["test_acc"])) * scale
            if group["test_acc"].notna().any() else math.nan,
            "evals_to_target": float(group.loc[reached, "evals_to_target"].median())
            if reached.any() else math.nan,
            "target_reached": float(reached.mean()),
            "epochs": float(group["epochs"].mean()),
            "snapped_pct": 100 * float(group["snapped"].sum() / max(1, group["lookups"].sum())),
            "simulated_s": float(group["simulated_s"].mean()),
            "wall_s": float(group["wall_time_s"].sum()),
        })
    return pd.DataFrame(rows)


ANYTIME_FRACTIONS = (0.25, 0.5, 1.0)
"""Where the anytime table reads the best-so-far regret: these fractions of the trials."""


def anytime_table(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per searcher, over the (table, seed) blocks every searcher ran: the best-so-far
    regret after 25%, 50% and 100% of the epochs the cell trained (its compute; mean and
    95% CI: how fast each converges at equal budget), and the spread of the final regret
    over seeds (standard deviation within a table, averaged over the tables: how much a
    result depends on the seed)."""
    blocks = common_blocks(cells)
    if rows.empty or blocks.empty:
        return pd.DataFrame()
    scale = scale_of(blocks)
    keep = blocks[["backbone", "seed"]].drop_duplicates()
    rows = rows.merge(keep, on=["backbone", "seed"])
    out = []
    for searcher, group in rows.groupby("searcher", sort=False):
        entry: dict[str, Any] = {"searcher": searcher}
        for frac in ANYTIME_FRACTIONS:
            values = []
            for _, cell in group.groupby(["backbone", "seed"]):
                spent = cell["epochs_total"].max()
                upto = cell[cell["epochs_total"] <= max(1, math.ceil(frac * spent))]
                values.append(float(upto["regret"].min()) * scale if len(upto) else math.nan)
            arr = np.asarray(values, float)
            low, high = _ci(arr)
            entry[f"regret_at_{int(frac * 100)}pct"] = (
                f"{np.nanmean(arr):.2f} [{low:.2f}, {high:.2f}]")
        final = blocks[blocks["searcher"] == searcher]
        sd = final.groupby("backbone")["final_regret"].std(ddof=1) * scale
        entry["seed_sd"] = float(sd.mean())
        out.append(entry)
    return pd.DataFrame(out)


def paired_table(cells: pd.DataFrame, rows: pd.DataFrame, pairs: list[str]) -> pd.DataFrame:
    """Each "a vs b" pair over the (table, seed) blocks both ran: the mean difference a - b
    of final regret, of test accuracy and of the best-so-far regret after a quarter of the
    trials (95% bootstrap CIs over blocks, and whether the interval excludes 0); each
    one's median evaluations to target and the ratio b / a (a's speed-up); the seed
    spread of each (`anytime_table`) and the variance ratio (a / b)^2."""
    ok = cells[cells["skipped"].isna()] if "skipped" in cells else cells
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
            low, high = _ci(diff)
            entry[f"{name}_diff"] = f"{np.nanmean(diff):+.2f} [{low:+.2f}, {high:+.2f}]"
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
    """The cells of the (table, seed) blocks every searcher ran: an overall mean over
    tables only compares searchers on the same problems."""
    ok = cells[cells["skipped"].isna()] if "skipped" in cells else cells
    k = ok["searcher"].nunique()
    sizes = ok.groupby(["backbone", "seed"])["searcher"].transform("nunique")
    return ok[sizes == k]


def ranks(cells: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Average rank of each searcher over the blocks (table, seed) every searcher ran
    (rank 1 = lowest final regret, ties averaged), the Friedman test across them and the
    Nemenyi critical difference at `ALPHA`."""
    from scipy import stats

    ok = cells[cells["skipped"].isna()] if "skipped" in cells else cells
    wide = ok.pivot_table(index=["backbone", "seed"], columns="searcher",
                          values="final_regret", aggfunc="first").dropna()
    k, n = wide.shape[1], wide.shape[0]
    if k < 2 or n < 2:
        return pd.DataFrame(columns=["searcher", "avg_rank"]), {"blocks": n, "k": k}
    ranked = np.apply_along_axis(stats.rankdata, 1, wide.to_numpy())
    avg = pd.DataFrame({"searcher": wide.columns, "avg_rank": ranked.mean(axis=0)})
    info: dict[str, Any] = {"blocks": n, "k": k}
    if k >= 3:
        res = stats.friedmanchisquare(*wide.to_numpy().T)
        info.update(friedman_chi2=float(res.statistic), friedman_p=float(res.pvalue))
    q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2)
    info["critical_difference"] = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return avg.sort_values("avg_rank").reset_index(drop=True), info


def verdicts(table: pd.DataFrame) -> pd.Series:
    """`best`, `tie` (interval overlaps the best's) or `worse`, by final regret."""
    if table.empty:
        return pd.Series(dtype=str)
    best = table["regret_mean"].idxmin()
    low, high = table.loc[best, ["regret_ci_low", "regret_ci_high"]]
    out = []
    for i, row in table.iterrows():
        if i == best:
            out.append("best")
        elif row["regret_ci_low"] <= high and row["regret_ci_high"] >= low:
            out.append("tie")
        else:
            out.append("worse")
    return pd.Series(out, index=table.index)


def separation(table: pd.DataFrame) -> str:
    """One sentence: do the best and the worst searcher's intervals separate?"""
    if len(table) < 2:
        return "Only one searcher: nothing to separate."
    best, worst = table["regret_mean"].idxmin(), table["regret_mean"].idxmax()
    b, w = table.loc[best], table.loc[worst]
    apart = b["regret_ci_high"] < w["regret_ci_low"]
    return (f"Best {b['searcher']} (regret {b['regret_mean']:.2f}, 95% CI "
            f"[{b['regret_ci_low']:.2f}, {b['regret_ci_high']:.2f}]) and worst "
            f"{w['searcher']} ({w['regret_mean']:.2f}, [{w['regret_ci_low']:.2f}, "
            f"{w['regret_ci_high']:.2f}]) " + ("separate: their intervals do not overlap."
                                              if apart else "do NOT separate: a tie."))


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
    shown = table.copy()
    shown["regret (95% CI)"] = [
        f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in
        zip(shown["regret_mean"], shown["regret_ci_low"], shown["regret_ci_high"],
            strict=True)]
    shown["target reached"] = [f"{100 * v:.0f}%" for v in shown["target_reached"]]
    cols = [c for c in ("backbone", "searcher") if c in shown] + [
        "seeds", "regret (95% CI)", "regret_iqm", "normalised_regret", "test_acc",
        "evals_to_target", "target reached", "avg_rank", "verdict", "epochs", "snapped_pct",
        "simulated_s"]
    return shown[[c for c in cols if c in shown]].rename(columns={"backbone": "table"}
                                                       ).to_markdown(index=False,
                                                                     floatfmt=".3g")


def _paired_of(folder: Path) -> list[str]:
    """The experiment's `replay.paired` pairs (from its stored config)."""
    try:
        config = json.loads((folder / "experiment_config.json").read_text())
    except (OSError, ValueError):
        return []
    return list((config.get("replay") or {}).get("paired") or [])


def write_replay_report(folder: Path, out: Path) -> dict[str, Path]:
    """comparison.md/.csv (overall and per table), cells.csv, the CD diagram and the
    best-so-far plots of one replay experiment folder."""
    cells, rows = load_replay(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    cells.to_csv(out / "cells.csv", index=False)
    written["cells"] = out / "cells.csv"
    if "skipped" not in cells:
        cells["skipped"] = np.nan
    scale = scale_of(cells[cells["skipped"].isna()])
    overall = summary_table(common_blocks(cells))
    avg, info = ranks(cells)
    overall = overall.merge(avg, on="searcher", how="left").sort_values(
        "regret_mean").reset_index(drop=True)
    overall["verdict"] = verdicts(overall)
    per_table = summary_table(cells, by=("backbone", "searcher"))
    parts = []
    for _, group in per_table.groupby("backbone", sort=False):
        group = group.sort_values("regret_mean").reset_index(drop=True)
        group["verdict"] = verdicts(group)
        parts.append(group)
    per_table = pd.concat(parts, ignore_index=True) if parts else per_table
    overall.to_csv(out / "comparison.csv", index=False)
    per_table.to_csv(out / "comparison_by_table.csv", index=False)
    skipped = cells[cells["skipped"].notna()].drop_duplicates(["searcher", "backbone"])
    unit = "points of the metric x100" if scale == 100 else "metric units"
    lines = [
        "# Replay comparison: final regret to each table's optimum",
        "",
        f"Regret in {unit} (lower is better), over seeds; 95% CI by bootstrap of the mean; "
        "IQM = interquartile mean; normalised regret = regret / (optimum - worst "
        "configuration); test_acc = the chosen configuration's recorded test accuracy; "
        "evals_to_target = trials started until a result reached the best 5% of the table "
        "(median over the seeds that reached it); verdict `tie` = interval overlaps the "
        "best's; epochs = epochs trained per cell (the budget is an upper bound: EMERALD-O's "
        "early stopping and diverged trials leave some unused); simulated_s = simulated "
        "wall time per cell (population methods run their members side by side).",
        "",
        "## All tables",
        "",
        f"Over the {info.get('blocks', 0)} (table, seed) blocks every searcher ran.",
        "",
        _fmt_table(overall),
        "",
        separation(overall),
        "",
    ]
    if "friedman_p" in info:
        lines += [f"Friedman test over {info['blocks']} (table, seed) blocks and {info['k']} "
                  f"searchers: chi2 = {info['friedman_chi2']:.1f}, p = "
                  f"{info['friedman_p']:.3g}; Nemenyi critical difference of average ranks "
                  f"at alpha {ALPHA}: {info['critical_difference']:.2f}.", ""]
    anytime = anytime_table(rows, cells)
    if not anytime.empty:
        anytime = anytime.set_index("searcher").loc[overall["searcher"]].reset_index()
        anytime.to_csv(out / "anytime.csv", index=False)
        lines += ["## Anytime regret and spread over seeds", "",
                  "Best-so-far regret after 25%, 50% and all of the epochs each cell "
                  "trained (mean [95% CI] over the same blocks; a population's members "
                  "train side by side, so its early columns are half-trained networks); "
                  "seed_sd = standard deviation of the final regret "
                  "over seeds within a table, averaged over the tables.", "",
                  anytime.to_markdown(index=False, floatfmt=".3g"), ""]
    pairs = _paired_of(folder)
    paired = paired_table(cells, rows, pairs) if pairs else pd.DataFrame()
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)
        lines += ["## Paired comparisons", "",
                  "a - b over the (table, seed) blocks both ran (95% bootstrap CI; "
                  "`separates`: the interval excludes 0); evals_to_target medians and "
                  "speedup = b's / a's; seed_sd as above, variance_ratio = (a's / b's)^2 "
                  "with a 95% bootstrap interval over seeds (paired).",
                  "", paired.to_markdown(index=False, floatfmt=".3g"), ""]
    for table, group in per_table.groupby("backbone", sort=False):
        lines += [f"## Table {table}", "", _fmt_table(group.drop(columns="backbone")), "",
                  separation(group), ""]
    if not skipped.empty:
        lines += ["## Entries that cannot run on a table", ""]
        lines += [f"- {r.searcher} on {r.backbone}: {r.skipped}" for r in skipped.itertuples()]
        lines.append("")
    lines += [APPROXIMATIONS, ""]
    (out / "comparison.md").write_text("\n".join(lines))
    written["comparison"] = out / "comparison.md"
    cd = plot_cd(avg, info, out / "critical_difference.png")
    if cd:
        written["critical_difference"] = cd
    if not rows.empty:
        for path in plot_curves(rows, out, scale):
            written[path.stem] = path
    return written
