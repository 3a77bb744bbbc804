"""One row schema for both backends (`service.core.api.EPOCH_FIELDS`): a trained trial and
a replayed one report only declared columns, the trained one every declared column, and the
replay nothing the trainer does not report, so reports read both the same way."""

from __future__ import annotations

from typing import Any

from service.backends.plans import build
from service.backends.replay.simulate import Simulation
from service.backends.tune.trainable import RunSettings, trial_steps
from service.core.api import EPOCH_FIELDS, HP_PREFIX, Budget, undeclared_columns
from service.core.objectives import OBJECTIVE_COLUMN, Objectives
from service.core.table import load_table
from tests.backends.replay.tables import emerald_table

HP = {"optimizer": "adam", "lr": 3e-3, "flip": True, "rotation": 10, "batch_size": 32}
OBJECTIVES = Objectives(("val_acc", "epoch_time_s"), ("max", "min"), ((0.0, 1.0), (0.0, 60.0)))
"""Objectives both backends report: each row then carries the scalarised `objective`."""


def _trained_rows() -> list[dict[str, Any]]:
    run = RunSettings(backbone="resnet18@0.0625", epochs=2, seed=0, test_last=True,
                      dataset={"name": "synthetic", "max_train": 96},
                      reward={"c_acc": 0.5}, objectives=OBJECTIVES.as_dict())
    return [row for row, _ in trial_steps({**HP, "run": run.as_dict()})]


def test_a_trained_trial_reports_every_declared_column_and_nothing_else() -> None:
    rows = _trained_rows()
    assert len(rows) == 2
    for row in rows:
        assert undeclared_columns(row) == []
        assert set(EPOCH_FIELDS) <= set(row)
        assert {f"{HP_PREFIX}lr", f"{HP_PREFIX}flip"} <= set(row) and row["hp_flip"] == 1
    assert "reward" in rows[0] and "test_acc" in rows[-1]
    for row in rows:  # the one function both backends call, the trial's own weights
        assert row[OBJECTIVE_COLUMN] == OBJECTIVES.scalarise(row, 0, "local")


def test_a_replayed_trial_reports_declared_columns_the_trainer_reports_too(tmp_path) -> None:
    table = load_table(emerald_table(tmp_path / "emerald.parquet"))
    plan = build("random", space=table.space, metric="val_acc", mode="max", seed=0,
                 budget=Budget(trials=3, epochs=table.epochs), objectives=OBJECTIVES)
    sim = Simulation(plan, table, seed=0, slots=1, objectives=OBJECTIVES).run()
    rows = [row for st in sim.state.values() for row in st.rows]
    assert rows
    trained = set(_trained_rows()[0])
    for row in rows:
        assert undeclared_columns(row) == [] and OBJECTIVE_COLUMN in row
        assert set(row) <= trained | {f"{HP_PREFIX}{name}" for name in table.names}
