"""Objectives in a replay (no Ray session): every row carries the scalarised `objective`
from the one function both backends call; single-objective searchers and schedulers
optimise it, the native multi-objective entries get the objectives' lists, and without
objectives nothing changes. The generated table's epoch time varies (SGD epochs are
slower), so accuracy against epoch time is a real two-objective problem."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from service.backends import plans
from service.backends.replay.simulate import replay_cell
from service.core.api import Budget
from service.core.config import ConfigError, build_config
from service.core.objectives import OBJECTIVE_COLUMN, Objectives
from service.core.space import default_space
from service.core.table import load_table
from service.testing import feed_bad_outcomes
from tests.backends.replay.tables import emerald_table

SPEC = Objectives(("val_acc", "epoch_time_s"), ("max", "min"), ((0.0, 1.0), (0.0, 1.0)),
                  reference=(0.0, 1.0))
BUDGET = Budget(trials=6, epochs=3)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return emerald_table(tmp_path_factory.mktemp("mo") / "emerald.parquet")


@pytest.fixture(scope="module")
def table(table_path):
    return load_table(table_path)


def test_rows_carry_the_scalarised_objective(table) -> None:
    sim = replay_cell("random", table, seed=2, budget=BUDGET, objectives=SPEC)
    rows = pd.DataFrame(sim.rows)
    assert OBJECTIVE_COLUMN in rows
    for row in sim.rows:
        expected = SPEC.scalarise(row, 2, row["trial_id"])
        assert row[OBJECTIVE_COLUMN] == expected or (math.isnan(expected) and math.isnan(
            row[OBJECTIVE_COLUMN]))
    assert rows[OBJECTIVE_COLUMN].notna().any()
    assert sim.target == (OBJECTIVE_COLUMN, "max")


def test_without_objectives_the_rows_are_unchanged(table) -> None:
    """Random search ignores the metric: the same seed replays the same rows, with or
    without objectives, but for the added column."""
    plain = replay_cell("random", table, seed=2, budget=BUDGET)
    scalarised = replay_cell("random", table, seed=2, budget=BUDGET, objectives=SPEC)
    assert all(OBJECTIVE_COLUMN not in row for row in plain.rows)
    assert plain.target == ("val_acc", "max")
    stripped = [{k: v for k, v in r.items() if k != OBJECTIVE_COLUMN}
                for r in scalarised.rows]
    assert pd.DataFrame(stripped).drop(columns="unix_time").equals(
        pd.DataFrame(plain.rows).drop(columns="unix_time"))


def test_a_scheduler_stops_on_the_scalarised_objective(table) -> None:
    sim = replay_cell("asha", table, seed=0, budget=BUDGET, objectives=SPEC)
    assert sim.scheduler.metric == OBJECTIVE_COLUMN and sim.scheduler._mode == "max"
    assert sim.epochs_done <= BUDGET.epoch_budget


@pytest.mark.parametrize("name", ["optuna-nsga2", "optuna-motpe"])
def test_native_entries_search_several_directions(table, name: str) -> None:
    sim = replay_cell(name, table, seed=0, budget=BUDGET, objectives=SPEC)
    inner = sim.plan.searcher.searcher
    assert inner.metric == ["val_acc", "epoch_time_s"] and inner.mode == ["max", "min"]
    study = inner._ot_study
    assert len(study.directions) == 2
    done = [t for t in study.trials if t.values is not None]
    assert len(done) == BUDGET.trials
    assert all(len(t.values) == 2 for t in done)


def test_native_entry_with_asha_scalarises_for_the_scheduler(table) -> None:
    sim = replay_cell("optuna-nsga2", table, seed=0, budget=BUDGET, objectives=SPEC,
                      options={"scheduler": "asha"})
    assert sim.scheduler.metric == OBJECTIVE_COLUMN
    assert sim.plan.searcher.metric == ["val_acc", "epoch_time_s"]


@pytest.mark.parametrize("name", ["optuna-nsga2", "optuna-motpe"])
def test_result_guard_absorbs_bad_outcomes_with_several_metrics(name: str) -> None:
    plan = plans.build(name, space=default_space(), metric="val_acc", mode="max", seed=0,
                       budget=BUDGET, objectives=SPEC)
    feed_bad_outcomes(plan.searcher)  # NaN, inf, errors, metric-less: failures, no crash
    assert isinstance(plan.searcher.suggest("after"), dict)
    plan.searcher.on_trial_complete("after", result={"val_acc": 0.7, "epoch_time_s": 0.5})
    assert plan.searcher.best[0] == 0.7  # the first objective's best


def test_replay_config_refuses_an_objective_the_table_lacks(table_path) -> None:
    raw = {"backend": "replay", "replay": {"tables": [str(table_path)]},
           "searchers": ["random"], "reference": [0.0, 10.0],
           "objectives": [{"metric": "val_acc"}, {"metric": "model_size_mb"}]}
    with pytest.raises(ConfigError, match=r"^objectives\.1\.metric: table 'emerald' records "
                                          r"no 'model_size_mb' \(it records val_acc"):
        build_config(raw)
    raw["objectives"] = [{"metric": "epoch_time_s"}, {"metric": "val_acc"}]
    raw["reference"] = [1.0, 0.0]
    with pytest.raises(ConfigError, match=r"^objectives\.0: table 'emerald' scores val_acc"):
        build_config(raw)
    raw["objectives"] = raw["objectives"][::-1]
    raw["reference"] = [0.0, 1.0]
    cfg = build_config(raw)
    assert cfg.objectives_spec.bounds == ((0.0, 1.0), (0.0, 1.0))


def test_a_replayed_experiment_reports_its_fronts(table_path, tmp_path) -> None:
    """The whole path: config, replay, stored config, report section."""
    from service.backends.replay.run import run_replay
    from service.reports import write_report

    cfg = build_config({
        "name": "mo", "storage": str(tmp_path), "backend": "replay",
        "replay": {"tables": [str(table_path)], "workers": 1, "searcher_time": False},
        "searchers": ["random", "optuna-nsga2", "asha"],
        "objectives": [{"metric": "val_acc", "mode": "max"},
                       {"metric": "epoch_time_s", "mode": "min"}],
        "reference": [0.0, 1.0], "budget": {"trials": 6, "epochs": 3}, "seeds": [0, 1]})
    summaries = run_replay(cfg, log=lambda *_: None)
    assert len(summaries) == 6 and not [s for s in summaries if "skipped" in s]
    written = write_report(cfg.experiment_dir)
    assert {"comparison", "pareto", "pareto_csv", "fronts_png"} <= set(written)
    table = pd.read_csv(written["pareto_csv"])
    assert set(table["searcher"]) == {"random", "optuna-nsga2", "asha"}
    assert (table["hypervolume"] > 0).all()
    assert set(table["verdict"]) <= {"best", "tie"}  # 2 blocks: no ranking claim
    assert "Reference point [0.0, 1.0] (stated in the config)" in written["pareto"].read_text()
    rows = pd.read_parquet(next(cfg.experiment_dir.glob("random__*__s0")) / "epochs.parquet")
    # NaN exactly where the trial diverged (no finite accuracy)
    assert (rows[OBJECTIVE_COLUMN].isna() == rows["val_acc"].isna()).all()
    assert rows[OBJECTIVE_COLUMN].notna().any()


@pytest.mark.parametrize("name", ["emerald", "emerald-dynamic", "adaptive-q", "layerwise",
                                  "hypera-search", "hyperband", "bohb", "pbt"])
def test_single_objective_entries_take_part_through_the_scalarisation(table, name) -> None:
    """EMERALD-O (both modes), the tabular agents, HYPERA, the schedulers and PBT optimise
    the scalarised `objective`, every row carrying it."""
    options = {"population": 4} if name == "pbt" else None
    sim = replay_cell(name, table, seed=0, budget=Budget(trials=4, epochs=3),
                      options=options, objectives=SPEC)
    assert sim.target == (OBJECTIVE_COLUMN, "max")
    rows = pd.DataFrame(sim.rows)
    assert len(rows) and (rows[OBJECTIVE_COLUMN].isna() == rows["val_acc"].isna()).all()


def test_layerwise_takes_the_scalarised_objective_as_its_reward() -> None:
    """Iranfar et al.'s agents add eq. 2's size term to an accuracy; the scalarised
    objective already weighs the objectives, so it is their reward as it stands."""
    options = {"c_acc": 0.5}
    plan = plans.build("layerwise", space=default_space(), metric="val_acc", mode="max",
                       seed=0, budget=BUDGET, objectives=SPEC, options=options)
    result = {"val_acc": 0.9, "epoch_time_s": 0.5, OBJECTIVE_COLUMN: -0.3,
              "model_size_mb": 40.0}
    assert plan.searcher.searcher.episode_reward(result, False) == -0.3
    single = plans.build("layerwise", space=default_space(), metric="val_acc", mode="max",
                         seed=0, budget=BUDGET, options=options).searcher.searcher
    # eq. 2 without objectives: 0.5 x 0.9 - 0.5 x 40 / 100
    assert single.episode_reward(result, False) == pytest.approx(0.25)
