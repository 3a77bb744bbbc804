"""The multi-objective section of a report (an experiment with `objectives`): each cell's
non-dominated trials (from each trial's final row), the hypervolume each cell's front
dominates up to the reference point, per searcher the mean with its 95% bootstrap CI over
seeds and the paired verdict against the best (the single-objective comparison's own
functions), and the fronts overlaid in one plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core.layout import CONFIG_FILE, ROWS_FILE
from service.core.pareto import hypervolume, pareto_mask
from service.reports.compare import ALPHA, MIN_BLOCKS, _ci, verdicts
from service.reports.load import _cells, _read_json, _read_jsonl

CELL = ["searcher", "backbone", "seed"]
REFERENCE_MARGIN = 0.1
"""Without a stated reference point: each objective's observed worst plus this share of its
observed range (so the worst points still add volume)."""


def objectives_of(folder: Path) -> tuple[list[str], list[str], list[float] | None] | None:
    """The stored config's objectives (metrics, modes, reference), None without them."""
    config = _read_json(folder / CONFIG_FILE) or {}
    objectives = config.get("objectives")
    if not objectives:
        return None
    from service.core.objectives import OBJECTIVE_METRICS

    metrics = [o["metric"] for o in objectives]
    modes = [o.get("mode") or OBJECTIVE_METRICS[o["metric"]][0] for o in objectives]
    return metrics, modes, config.get("reference")


def final_rows(folder: Path, metrics: Sequence[str]) -> pd.DataFrame:
    """Each trial's final row (its last reported epoch) of every cell: cell, trial_id and
    the objectives' values (NaN where missing). Reads a replay's rows file or Tune's
    result lines, whichever the cell holds."""
    out = []
    for cell_dir, cell in _cells(folder):
        last: dict[str, dict[str, Any]] = {}
        if (cell_dir / ROWS_FILE).is_file():
            try:
                rows = pd.read_parquet(cell_dir / ROWS_FILE)
            except Exception:  # noqa: BLE001 - a cut file: the cell has no trials here
                rows = pd.DataFrame()
            for record in rows.to_dict("records"):
                last[str(record.get("trial_id"))] = record
        else:
            for result in sorted(cell_dir.glob("*/result.json")):
                lines = _read_jsonl(result)
                if lines:
                    last[str(lines[-1].get("trial_id") or result.parent.name)] = lines[-1]
        for trial_id, row in last.items():
            out.append({"searcher": cell.searcher, "backbone": cell.backbone,
                        "seed": cell.seed, "trial_id": trial_id,
                        **{m: _number(row.get(m)) for m in metrics}})
    return pd.DataFrame(out, columns=[*CELL, "trial_id", *metrics])


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def with_fronts(points: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str]
                ) -> pd.DataFrame:
    """`points` with `on_front`: whether the trial is non-dominated within its cell."""
    points = points.copy()
    points["on_front"] = False
    for _, group in points.groupby(CELL, sort=False):
        points.loc[group.index, "on_front"] = pareto_mask(group[list(metrics)].to_numpy(float),
                                                          modes)
    return points


def reference_point(points: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str],
                    given: Sequence[float] | None) -> list[float]:
    """The reference point: the stated one, else each objective's observed worst plus
    `REFERENCE_MARGIN` of its observed range."""
    if given is not None:
        return [float(v) for v in given]
    out = []
    for metric, mode in zip(metrics, modes, strict=True):
        values = points[metric].to_numpy(float)
        values = values[np.isfinite(values)]
        if not values.size:
            out.append(0.0)
            continue
        span = float(values.max() - values.min()) or max(abs(float(values.max())), 1.0)
        out.append(float(values.min() - REFERENCE_MARGIN * span) if mode == "max"
                   else float(values.max() + REFERENCE_MARGIN * span))
    return out


def cell_hypervolumes(points: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str],
                      reference: Sequence[float]) -> pd.DataFrame:
    """Per cell: trials, non-dominated trials, the hypervolume of its front, and the gap to
    the hypervolume of all searchers' trials of its (table, seed) block pooled (lower is
    better: the `final_regret` the paired verdicts read)."""
    rows = []
    for key, group in points.groupby(CELL, sort=False):
        values = group[list(metrics)].to_numpy(float)
        rows.append({**dict(zip(CELL, key, strict=True)), "trials": len(group),
                     "front": int(pareto_mask(values, modes).sum()),
                     "hypervolume": hypervolume(values, modes, reference)})
    cells = pd.DataFrame(rows, columns=[*CELL, "trials", "front", "hypervolume"])
    pooled = {key: hypervolume(group[list(metrics)].to_numpy(float), modes, reference)
              for key, group in points.groupby(["backbone", "seed"], sort=False)}
    block = [pooled[(b, s)] for b, s in zip(cells["backbone"], cells["seed"], strict=True)]
    cells["block_hypervolume"] = block
    cells["final_regret"] = cells["block_hypervolume"] - cells["hypervolume"]
    # what the comparison's failure scoring reads (a cell always has a hypervolume, 0 for
    # no point inside the reference box, so none fails)
    cells["optimum"], cells["worst"] = cells["block_hypervolume"], 0.0
    return cells


def hypervolume_table(cells: pd.DataFrame, *, min_blocks: int = MIN_BLOCKS
                      ) -> tuple[pd.DataFrame, str]:
    """Per searcher: cells, mean trials on the front, mean hypervolume with its 95%
    bootstrap CI over the cells, and the paired verdict against the best (largest mean
    hypervolume) over the (table, seed) blocks every searcher ran: `verdicts` of the
    single-objective comparison on the hypervolume gap, so `tie` below `min_blocks`."""
    rows = []
    for searcher, group in cells.groupby("searcher", sort=False):
        values = group["hypervolume"].to_numpy(float)
        low, high = _ci(values)
        rows.append({"searcher": searcher, "cells": len(group),
                     "front_trials": float(group["front"].mean()),
                     "hypervolume": float(values.mean()), "hv_ci_low": low,
                     "hv_ci_high": high})
    table = pd.DataFrame(rows, columns=["searcher", "cells", "front_trials", "hypervolume",
                                        "hv_ci_low", "hv_ci_high"])
    if table.empty:
        return table, "No cells."
    verdict, sentence = verdicts(cells, min_blocks=min_blocks, scale=1.0)
    table = table.merge(verdict[["searcher", "verdict", "p_holm"]], on="searcher", how="left")
    table = table.sort_values("hypervolume", ascending=False, kind="stable")
    return table.reset_index(drop=True), sentence


def plot_fronts(points: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str],
                path: Path) -> Path | None:
    """One PNG: per table (panel) each searcher's front of its trials over all seeds
    pooled, as a line through its points in the first two objectives (a third is left out of the
    picture, not of the hypervolume), each cell's non-dominated trials as faint dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = metrics[0], metrics[1]
    finite = points[np.isfinite(points[[x, y]].to_numpy(float)).all(axis=1)]
    if finite.empty:
        return None
    tables = list(dict.fromkeys(finite["backbone"]))
    searchers = list(dict.fromkeys(finite["searcher"]))
    palette = plt.get_cmap("tab10" if len(searchers) <= 10 else "tab20")
    colour = {s: palette(i % palette.N) for i, s in enumerate(searchers)}
    fig, axes = plt.subplots(1, len(tables), figsize=(max(7, 5 * len(tables)), 4.5),
                             squeeze=False)
    for ax, table in zip(axes[0], tables, strict=True):
        sub = finite[finite["backbone"] == table]
        for searcher, group in sub.groupby("searcher", sort=False):
            cells = group[group["on_front"]] if "on_front" in group else group
            ax.scatter(cells[x], cells[y], s=8, alpha=0.25, color=colour[searcher])
            two = group[[x, y]].to_numpy(float)
            front = two[pareto_mask(two, modes[:2])]
            front = front[np.argsort(front[:, 0])]
            ax.plot(front[:, 0], front[:, 1], marker="o", ms=3, color=colour[searcher],
                    label=searcher)
        ax.set_title(str(table))
        ax.set_xlabel(f"{x} ({modes[0]})")
        ax.set_ylabel(f"{y} ({modes[1]})")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.savefig(path, dpi=110, bbox_inches="tight")  # every legend entry inside the file
    plt.close(fig)
    return path


def write_pareto_section(folder: Path, out: Path) -> dict[str, Path]:
    """pareto.md/.csv (per searcher), pareto_cells.csv, fronts.csv (every trial's final
    values, `on_front` per cell) and fronts.png, where the experiment has objectives;
    nothing otherwise."""
    found = objectives_of(folder)
    if found is None:
        return {}
    metrics, modes, given = found
    points = with_fronts(final_rows(folder, metrics), metrics, modes)
    if points.empty:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    reference = reference_point(points, metrics, modes, given)
    cells = cell_hypervolumes(points, metrics, modes, reference)
    table, sentence = hypervolume_table(cells)
    written = {"fronts": out / "fronts.csv", "pareto_cells": out / "pareto_cells.csv",
               "pareto_csv": out / "pareto.csv", "pareto": out / "pareto.md"}
    points.to_csv(written["fronts"], index=False)
    cells.drop(columns=["optimum", "worst"]).to_csv(written["pareto_cells"], index=False)
    table.to_csv(written["pareto_csv"], index=False)
    stated = "stated in the config" if given is not None else (
        f"none stated: each objective's observed worst plus {REFERENCE_MARGIN:g} of its range")
    objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(metrics, modes, strict=True))
    lines = [
        "# Multi-objective comparison: hypervolume of each cell's front", "",
        f"Objectives: {objectives}. Reference point {[round(v, 6) for v in reference]} "
        f"({stated}). Each trial is its final row; a cell's front is its non-dominated "
        "trials (front_trials: their mean number per cell); hypervolume = the region its "
        "front dominates up to the reference point (larger is better), mean over cells "
        "with a 95% bootstrap CI; verdict = paired Wilcoxon signed-rank test of the "
        "hypervolume against the best searcher's on the same (table, seed) blocks, "
        f"Holm-corrected (p_holm): `worse`/`better` when p < {ALPHA} over at least "
        f"{MIN_BLOCKS} blocks, otherwise `tie`.", "",
        table.to_markdown(index=False, floatfmt=".4g"), "", sentence, "",
        "Per cell: pareto_cells.csv; every trial's final values with `on_front`: fronts.csv.",
        ""]
    plot = plot_fronts(points, metrics, modes, out / "fronts.png")
    if plot is not None:
        written["fronts_png"] = plot
        lines += ["![fronts](fronts.png)", ""]
    written["pareto"].write_text("\n".join(lines))
    return written
