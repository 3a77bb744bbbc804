"""Objectives in the config (one line for each refusal) and the scalarised `objective`
column both backends put on a row (service.core.objectives)."""

from __future__ import annotations

import math

import pytest

from service.core.config import ConfigError, build_config
from service.core.objectives import (
    OBJECTIVE_COLUMN,
    Objectives,
    search_target,
    trial_key,
    with_objective,
)
from service.core.pareto import simplex_lattice

TWO = [{"metric": "val_acc", "mode": "max"}, {"metric": "model_size_mb", "mode": "min"}]
BASE = {"objectives": TWO, "reference": [0.0, 10.0], "searchers": ["random", "optuna-nsga2"]}


def refusal(**changes) -> str:
    raw = {**BASE, **changes}
    with pytest.raises(ConfigError) as err:
        build_config({k: v for k, v in raw.items() if v is not None})
    message = str(err.value)
    assert "\n" not in message
    return message


def test_objectives_set_metric_and_mode_and_round_trip():
    cfg = build_config(BASE)
    assert (cfg.metric, cfg.mode) == ("val_acc", "max")
    spec = cfg.objectives_spec
    assert spec.metrics == ("val_acc", "model_size_mb") and spec.modes == ("max", "min")
    assert spec.bounds == ((0.0, 1.0), (0.0, 10.0))  # natural; 0 to the reference
    assert build_config(cfg.model_dump()) == cfg
    first_min = build_config({**BASE, "objectives": TWO[::-1], "reference": [10.0, 0.0]})
    assert (first_min.metric, first_min.mode) == ("model_size_mb", "min")


def test_single_objective_config_is_unchanged():
    cfg = build_config({"searchers": ["random"]})
    assert cfg.objectives is None and cfg.objectives_spec is None
    assert (cfg.metric, cfg.mode) == ("val_acc", "max")
    assert search_target(None, False, "val_acc", "max") == ("val_acc", "max")
    assert with_objective({"val_acc": 0.5}, None, 0, "t_00001") == {"val_acc": 0.5}


@pytest.mark.parametrize(("changes", "expected"), [
    ({"objectives": TWO[:1]}, "objectives: 1 given; give 2 to 3"),
    ({"objectives": [*TWO, {"metric": "val_loss"}, {"metric": "epoch_time_s"}]},
     "objectives: 4 given"),
    ({"objectives": [TWO[0], {"metric": "model_size"}]},
     "objectives.1.metric: unknown metric 'model_size' (did you mean 'model_size_mb'?)"),
    ({"objectives": [TWO[0], TWO[0]]},
     "objectives.1.metric: 'val_acc' is given twice; give each metric once"),
    ({"objectives": [{"metric": "val_acc", "mode": "maximise"}, TWO[1]]},
     "objectives.0.mode: 'maximise' is not max or min"),
    ({"objectives": [TWO[0], {"metric": "infer_ms_per_batch"}]},
     "objectives.1.metric: 'infer_ms_per_batch' is measured only by the final test, no "
     "trial row reports it; use train_ms_per_batch or epoch_time_s"),
    ({"reference": [0.0, 10.0, 1.0]},
     "reference: 3 values for 2 objectives; give one per objective"),
    ({"reference": None},
     "objectives.1.bounds: model_size_mb has no natural range; give bounds: [low, high] (or "
     "a reference point) so random (single-objective) can optimise the scalarised objective"),
    ({"metric": "val_loss"},
     "metric: with objectives, the metric is the first objective's ('val_acc')"),
    ({"scalarisation": {"kind": "weights", "weights": [1.0, 1.0, 1.0]}},
     "scalarisation.weights: 3 weights for 2 objectives"),
    ({"scalarisation": {"kind": "weights"}}, "scalarisation.weights: kind weights needs"),
    ({"scalarisation": {"weights": [0.5, 0.5]}}, "scalarisation.weights: ParEGO draws"),
    ({"objectives": [{"metric": "val_acc", "bounds": [1.0, 0.0]}, TWO[1]]},
     "objectives.0.bounds: [1.0, 0.0] must be [low, high] with low < high"),
    # a native multi-objective entry whose scheduler compares one metric needs the
    # scalarised objective, so bounds for every objective
    ({"reference": None, "searchers": ["optuna-nsga2"],
      "searcher_options": {"optuna-nsga2": {"scheduler": "asha"}}},
     "objectives.1.bounds: model_size_mb has no natural range; give bounds: [low, high] (or "
     "a reference point) so optuna-nsga2's scheduler (one metric) can optimise"),
])
def test_refusals_are_one_line(changes, expected):
    assert refusal(**changes).startswith(expected)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"searchers": ["optuna-motpe"]},
     "searchers.optuna-motpe: a multi-objective searcher needs objectives"),
    ({"reference": [0.0, 1.0]}, "reference: applies to objectives"),
    ({"scalarisation": {"kind": "weights", "weights": [1.0]}},
     "scalarisation: applies to objectives"),
    ({"metric": "model_size_mb"},
     "metric: 'model_size_mb' is an objective, not a metric searchers optimise alone"),
])
def test_objective_keys_without_objectives_are_refused(raw, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(
            ")", r"\)").replace(".", r"\.").replace("[", r"\[")):
        build_config(raw)


def test_native_entries_alone_need_no_bounds():
    cfg = build_config({**BASE, "reference": None, "searchers": ["optuna-nsga2",
                                                                  "optuna-motpe"]})
    assert not cfg.objectives_spec.scalarisable
    row = with_objective({"val_acc": 0.9, "model_size_mb": 3.0}, cfg.objectives_spec, 0, "a_1")
    assert OBJECTIVE_COLUMN not in row


def test_search_target_by_entry_kind():
    spec = build_config(BASE).objectives_spec
    assert search_target(spec, True, "val_acc", "max") == (["val_acc", "model_size_mb"],
                                                           ["max", "min"])
    assert search_target(spec, False, "val_acc", "max") == (OBJECTIVE_COLUMN, "max")


def test_scalarised_column_parego_and_fixed_weights():
    spec = build_config(BASE).objectives_spec
    row = {"val_acc": 0.8, "model_size_mb": 4.0}
    # costs (0.2, 0.4); each trial's weights are one of ParEGO's 11 lattice vectors
    values = {with_objective(dict(row), spec, 3, f"x_{i:05d}")[OBJECTIVE_COLUMN]
              for i in range(60)}
    expected = {-(max(w[0] * 0.2, w[1] * 0.4) + 0.05 * (w[0] * 0.2 + w[1] * 0.4))
                for w in simplex_lattice(2)}
    assert all(any(math.isclose(v, e) for e in expected) for v in values)
    assert len(values) > 3
    # the same trial always gets the same weights (a resumed trial, the other backend)
    assert spec.scalarise(row, 3, "abc_00007") == spec.scalarise(row, 3, "zz_00007")
    fixed = build_config({**BASE, "scalarisation": {"kind": "weights", "weights": [3, 1]}})
    value = fixed.objectives_spec.scalarise(row, 0, "t_1")
    assert value == pytest.approx(-(max(0.75 * 0.2, 0.25 * 0.4) + 0.05 * (0.15 + 0.1)))
    # better in both objectives is better under any weights; NaN where a value is missing
    better = {"val_acc": 0.9, "model_size_mb": 2.0}
    for i in range(30):
        assert spec.scalarise(better, 0, f"t_{i}") >= spec.scalarise(row, 0, f"t_{i}")
    assert math.isnan(spec.scalarise({"val_acc": math.nan, "model_size_mb": 1.0}, 0, "t_1"))
    assert math.isnan(spec.scalarise({"val_acc": 0.5}, 0, "t_1"))


def test_objectives_travel_as_plain_values():
    spec = build_config(BASE).objectives_spec
    assert Objectives.from_dict(spec.as_dict()) == spec
    assert trial_key("3f2a1_00012") == 12 and trial_key("local") == trial_key("local")
