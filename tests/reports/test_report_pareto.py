"""The multi-objective report (service.reports.pareto) on synthetic per-cell trial frames:
fronts per cell, hypervolume per cell against hand-computed values, the per-searcher table
with bootstrap CIs and the comparison's paired verdicts (a ranking claim only over 20
blocks), the section written from a folder in both backends' layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.core.layout import CONFIG_FILE, ROWS_FILE, Cell, cell_name
from service.core.pareto import hypervolume
from service.reports.pareto import (
    cell_hypervolumes,
    final_rows,
    hypervolume_table,
    reference_point,
    with_fronts,
    write_pareto_section,
)

METRICS, MODES = ["val_acc", "model_size_mb"], ["max", "min"]
REFERENCE = [0.0, 10.0]


def synthetic(seeds: int, trials: int = 8, gap: float = 0.15) -> pd.DataFrame:
    """Two searchers' final rows per (table, seed) cell: `near` samples points close to a
    front where larger models are more accurate, acc = 0.4 + 0.06 * size (size 1..9),
    `far` the same sizes `gap` accuracy below it; noise per seed."""
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for searcher, offset in (("near", 0.0), ("far", gap)):
            size = rng.uniform(1, 9, trials)
            acc = 0.4 + 0.06 * size - offset - rng.uniform(0, 0.05, trials)
            rows += [{"searcher": searcher, "backbone": "t1", "seed": seed,
                      "trial_id": f"{seed}_{i:05d}", "val_acc": a, "model_size_mb": s}
                     for i, (a, s) in enumerate(zip(acc, size, strict=True))]
    return pd.DataFrame(rows)


def test_fronts_and_hypervolume_per_cell_by_hand() -> None:
    points = pd.DataFrame([
        {"searcher": "a", "backbone": "t", "seed": 0, "trial_id": "1", "val_acc": 0.9,
         "model_size_mb": 5.0},
        {"searcher": "a", "backbone": "t", "seed": 0, "trial_id": "2", "val_acc": 0.8,
         "model_size_mb": 2.0},
        {"searcher": "a", "backbone": "t", "seed": 0, "trial_id": "3", "val_acc": 0.7,
         "model_size_mb": 6.0},
        {"searcher": "b", "backbone": "t", "seed": 0, "trial_id": "4", "val_acc": 0.95,
         "model_size_mb": 8.0},
        {"searcher": "b", "backbone": "t", "seed": 0, "trial_id": "5", "val_acc": np.nan,
         "model_size_mb": 1.0},
    ])
    marked = with_fronts(points, METRICS, MODES)
    assert marked["on_front"].tolist() == [True, True, False, True, False]
    cells = cell_hypervolumes(marked, METRICS, MODES, REFERENCE).set_index("searcher")
    # a: 0.8 x 8 (size 2..10) + 0.1 x 5 (size 5..10) = 6.9; b: 0.95 x 2 = 1.9
    assert cells.loc["a", "hypervolume"] == pytest.approx(6.9)
    assert cells.loc["b", "hypervolume"] == pytest.approx(1.9)
    assert cells.loc["a", "front"] == 2 and cells.loc["b", "front"] == 1
    # the block's pooled front: a's two points and b's (0.95, 8): 6.9 + 0.05 x 2
    assert cells.loc["a", "block_hypervolume"] == pytest.approx(7.0)
    assert cells.loc["b", "final_regret"] == pytest.approx(7.0 - 1.9)


def test_reference_point_stated_or_observed() -> None:
    points = synthetic(2)
    assert reference_point(points, METRICS, MODES, REFERENCE) == REFERENCE
    observed = reference_point(points, METRICS, MODES, None)
    acc, size = points["val_acc"], points["model_size_mb"]
    assert observed[0] == pytest.approx(acc.min() - 0.1 * (acc.max() - acc.min()))
    assert observed[1] == pytest.approx(size.max() + 0.1 * (size.max() - size.min()))
    # every finite point then adds volume
    cells = cell_hypervolumes(points, METRICS, MODES, observed)
    assert (cells["hypervolume"] > 0).all()


def test_a_better_front_wins_over_20_blocks_and_ties_over_5() -> None:
    cells = cell_hypervolumes(synthetic(20), METRICS, MODES, REFERENCE)
    table, sentence = hypervolume_table(cells)
    assert table["searcher"].tolist() == ["near", "far"]
    assert table["verdict"].tolist() == ["best", "worse"]
    near = table.iloc[0]
    assert near["hv_ci_low"] <= near["hypervolume"] <= near["hv_ci_high"]
    assert near["hv_ci_low"] < near["hv_ci_high"]
    assert "over 20 (table, seed) blocks" in sentence
    few, sentence = hypervolume_table(cell_hypervolumes(synthetic(5), METRICS, MODES,
                                                        REFERENCE))
    assert few["verdict"].tolist() == ["best", "tie"]
    assert "fewer than 20 blocks: no ranking claim" in sentence


def test_equal_searchers_tie() -> None:
    points = synthetic(20, gap=0.0)
    points.loc[points["searcher"] == "far", "searcher"] = "same"
    # the same sampler twice: only the noise differs
    cells = cell_hypervolumes(points, METRICS, MODES, REFERENCE)
    table, _ = hypervolume_table(cells)
    assert set(table["verdict"]) <= {"best", "tie"}


def _write_cells(folder: Path, points: pd.DataFrame, tune_layout: bool) -> None:
    """The points as a run writes them: a replay's rows file per cell (several epochs per
    trial, the last is final) or Tune's result.json lines per trial."""
    for (searcher, backbone, seed), group in points.groupby(["searcher", "backbone", "seed"]):
        cell_dir = folder / cell_name(Cell(searcher, backbone, int(seed)))
        cell_dir.mkdir(parents=True)
        rows = []
        for record in group.to_dict("records"):
            early = {**record, "val_acc": record["val_acc"] - 0.3, "training_iteration": 1}
            rows += [early, {**record, "training_iteration": 2}]
        if tune_layout:
            for record in group.to_dict("records"):
                trial = cell_dir / f"trial_{record['trial_id']}"
                trial.mkdir()
                lines = [r for r in rows if r["trial_id"] == record["trial_id"]]
                (trial / "result.json").write_text(
                    "\n".join(json.dumps({k: v for k, v in r.items() if k not in
                                          ("searcher", "backbone", "seed")}) for r in lines))
        else:
            pd.DataFrame(rows).drop(columns=["searcher", "backbone", "seed"]).to_parquet(
                cell_dir / ROWS_FILE, index=False)


@pytest.mark.parametrize("tune_layout", [False, True])
def test_section_from_a_folder(tmp_path: Path, tune_layout: bool) -> None:
    points = synthetic(3)
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps({
        "objectives": [{"metric": "val_acc", "mode": "max"},
                       {"metric": "model_size_mb", "mode": "min"}],
        "reference": REFERENCE}))
    _write_cells(folder, points, tune_layout)
    read = final_rows(folder, METRICS).sort_values(["searcher", "seed", "trial_id"])
    expected = points.sort_values(["searcher", "seed", "trial_id"])
    assert np.allclose(read["val_acc"], expected["val_acc"])  # the final rows, not epoch 1
    written = write_pareto_section(folder, tmp_path / "report")
    assert {"pareto", "pareto_csv", "fronts", "fronts_png"} <= set(written)
    assert written["fronts_png"].stat().st_size > 0
    text = written["pareto"].read_text()
    assert "Reference point [0.0, 10.0] (stated in the config)" in text
    cells = pd.read_csv(written["pareto_cells"])
    near = points[(points["searcher"] == "near") & (points["seed"] == 0)]
    value = cells[(cells["searcher"] == "near") & (cells["seed"] == 0)]["hypervolume"]
    assert float(value.iloc[0]) == pytest.approx(hypervolume(
        near[METRICS].to_numpy(), MODES, REFERENCE))


def test_no_section_without_objectives(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"metric": "val_acc"}))
    _write_cells(tmp_path, synthetic(1), tune_layout=False)
    assert write_pareto_section(tmp_path, tmp_path / "report") == {}
    assert not (tmp_path / "report").exists()
