"""A real run's cell with objectives (no Ray session): the plan's searcher target and the
run settings every trial carries, so the trainable adds the scalarised `objective`; without
objectives both are as before."""

from __future__ import annotations

from service.backends.tune.experiment import cell_plan
from service.core.config import build_config
from service.core.layout import Cell
from service.core.objectives import OBJECTIVE_COLUMN, Objectives

OBJECTIVES = {"objectives": [{"metric": "val_acc"}, {"metric": "model_size_mb"}],
              "reference": [0.0, 20.0]}


def _cell(raw: dict, searcher: str):
    cfg = build_config({"searchers": [searcher], "backbones": ["resnet18@0.0625"],
                        "dataset": {"name": "synthetic"}, **raw})
    return cfg, *cell_plan(cfg, Cell(searcher, "resnet18@0.0625", 0))


def test_scalarised_and_native_targets_and_the_trials_settings() -> None:
    cfg, plan, _, run = _cell(OBJECTIVES, "asha")
    assert (plan.metric, plan.mode) == (OBJECTIVE_COLUMN, "max")
    assert plan.scheduler.metric == OBJECTIVE_COLUMN
    assert Objectives.from_dict(run.objectives) == cfg.objectives_spec
    assert (run.metric, run.mode) == ("val_acc", "max")  # early stopping, best trial
    _, plan, algorithm, _ = _cell(OBJECTIVES, "optuna-motpe")
    assert plan.metric == ["val_acc", "model_size_mb"] and plan.mode == ["max", "min"]
    assert algorithm.searcher.metric == ["val_acc", "model_size_mb"]


def test_without_objectives_nothing_changes() -> None:
    _, plan, _, run = _cell({}, "asha")
    assert (plan.metric, plan.mode) == ("val_acc", "max")
    assert plan.scheduler.metric == "val_acc" and run.objectives is None
