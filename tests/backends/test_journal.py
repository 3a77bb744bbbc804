"""The Optuna journal (service.backends.journal): a trial's rows map to an Optuna trial with
the right state (RUNNING, COMPLETE, FAIL, PRUNED), value, intermediate values, parameters
with distributions from the search space and user attributes, with no Ray; a live writer
carries a trial from start to end and across a resume; a replay writes one study per cell
that matches the cell's rows."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from service.backends.journal import (
    JournalWriter,
    TrialLog,
    describe_schedule,
    distributions,
    frozen_trial,
    journal_path,
)
from service.core.api import Schedule
from service.core.layout import Cell, parse_cell_name
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "optimizer": {"choice": ["adam", "sgd"]}, "lr": {"loguniform": [1e-5, 1e-1]},
    "momentum": {"uniform": [0.0, 0.99]}, "batch_size": {"int": [16, 128]}, "flip": True})
CONFIG = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "batch_size": 32, "flip": True}


def log_of(values: list[float], planned: int = 3, status: str = "TERMINATED",
           **rows: object) -> TrialLog:
    log = TrialLog("t1", dict(CONFIG), planned, status=status)
    for epoch, value in enumerate(values, start=1):
        log.add_row({"epoch": epoch, "val_acc": value, **rows}, "val_acc")
    return log


def test_each_searched_dimension_gets_its_distribution_and_constants_none() -> None:
    dists = distributions(SPACE)
    assert dists == {
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "momentum": FloatDistribution(0.0, 0.99),
        "batch_size": IntDistribution(16, 128)}


def test_a_running_trial_has_its_params_and_epochs_but_no_value() -> None:
    trial = frozen_trial(log_of([0.5, 0.6], status="RUNNING"), SPACE, "max")
    trial._validate()
    assert trial.state == TrialState.RUNNING and trial.value is None
    assert trial.params == {k: v for k, v in CONFIG.items() if k != "flip"}
    assert trial.distributions == distributions(SPACE)
    assert trial.intermediate_values == {1: 0.5, 2: 0.6}
    assert trial.datetime_complete is None
    assert trial.user_attrs["tune_trial_id"] == "t1" and trial.user_attrs["epochs"] == 2


@pytest.mark.parametrize(("mode", "value", "epoch"), [("max", 0.7, 2), ("min", 0.5, 1)])
def test_a_complete_trial_is_valued_at_its_best_epoch(mode: str, value: float,
                                                       epoch: int) -> None:
    trial = frozen_trial(log_of([0.5, 0.7, 0.6]), SPACE, mode)
    trial._validate()
    assert trial.state == TrialState.COMPLETE and trial.value == value
    assert trial.user_attrs["chosen_epoch"] == epoch and trial.user_attrs["last_value"] == 0.6


def test_a_trial_ended_before_its_budget_is_pruned() -> None:
    trial = frozen_trial(log_of([0.5, 0.6], planned=5), SPACE, "max")
    trial._validate()
    assert trial.state == TrialState.PRUNED and trial.value == 0.6
    assert trial.user_attrs["planned_epochs"] == 5


def test_errored_diverged_terminated_and_valueless_trials_fail() -> None:
    errored = frozen_trial(log_of([0.5], status="ERROR"), SPACE, "max")
    diverged = log_of([0.5, 0.6])
    diverged.add_row({"epoch": 3, "val_acc": math.nan, "diverged": True}, "val_acc")
    terminated = log_of([0.5, 0.6, 0.7], terminated="batch time over the limit")
    nothing = log_of([math.nan, math.inf, -math.inf])
    for log in (diverged, terminated, nothing):
        trial = frozen_trial(log, SPACE, "max")
        trial._validate()
        assert trial.state == TrialState.FAIL and trial.value is None
    errored._validate()
    assert errored.state == TrialState.FAIL
    assert frozen_trial(diverged, SPACE, "max").user_attrs["failed"] == "diverged at epoch 3"
    assert frozen_trial(diverged, SPACE, "max").intermediate_values == {1: 0.5, 2: 0.6}
    assert "batch time" in frozen_trial(terminated, SPACE, "max").user_attrs["failed"]
    assert frozen_trial(nothing, SPACE, "max").intermediate_values == {}


def test_an_in_trial_method_shows_its_schedule_and_the_hyperparameters_of_the_chosen_epoch(
        ) -> None:
    schedule = Schedule()
    for lr in (1e-3, 1e-3, 1e-4, 1e-5):
        schedule.append({**CONFIG, "lr": lr})
    log = log_of([0.5, 0.6, 0.8, 0.7], planned=4, schedule=schedule.to_json())
    plain = frozen_trial(log, SPACE, "max")
    trial = frozen_trial(log, SPACE, "max", in_trial=True)
    trial._validate()
    assert plain.params["lr"] == 1e-3 and "schedule" not in plain.user_attrs
    assert trial.params["lr"] == 1e-4 and trial.user_attrs["chosen_epoch"] == 3
    assert trial.user_attrs["schedule"] == ("1: optimizer=adam lr=0.001 momentum=0.9 "
                                            "batch_size=32 | 3: lr=0.0001 | 4: lr=1e-05")
    assert describe_schedule(Schedule([(1, CONFIG)], 2), ("lr",)) == "1: lr=0.001"


def test_log10_names_and_values_off_the_space() -> None:
    log = TrialLog("t2", {"log10_lr": -2.0, "optimizer": "adagrad", "momentum": 1.5}, 1)
    log.add_row({"epoch": 1, "val_acc": 0.5}, "val_acc")
    trial = frozen_trial(log, SPACE, "max")
    trial._validate()
    assert trial.params == {"lr": pytest.approx(1e-2)}
    assert trial.user_attrs["off_space_optimizer"] == "adagrad"
    assert trial.user_attrs["off_space_momentum"] == 1.5


def read(path: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def test_a_live_trial_from_start_to_end_and_across_a_resume(tmp_path: Path) -> None:
    cell = Cell("optuna", "resnet18@0.0625", 3)
    writer = JournalWriter(tmp_path, SPACE, "val_acc", "max")
    log = TrialLog("a", dict(CONFIG), 3)
    writer.start(cell, log)
    writer.result("a", *log.add_row({"epoch": 1, "val_acc": 0.4}, "val_acc"))
    storage = read(journal_path(tmp_path))
    (study,) = storage.get_all_studies()
    assert study.study_name == cell.name and study.directions == [
        optuna.study.StudyDirection.MAXIMIZE]
    assert study.user_attrs == {"searcher": "optuna", "backbone": "resnet18@0.0625",
                                "seed": 3, "metric": "val_acc"}
    (trial,) = storage.get_all_trials(study._study_id)
    assert trial.state == TrialState.RUNNING and trial.intermediate_values == {1: 0.4}
    # the driver died; a resumed one carries on the same trial
    again = JournalWriter(tmp_path, SPACE, "val_acc", "max")
    resumed = TrialLog("a", dict(CONFIG), 3)
    assert again.start(cell, resumed) == trial._trial_id and resumed.values == {1: 0.4}
    for epoch, value in ((2, 0.7), (3, 0.6)):
        again.result("a", *resumed.add_row({"epoch": epoch, "val_acc": value}, "val_acc"))
    resumed.status = "TERMINATED"
    again.end(cell, resumed)
    (trial,) = read(journal_path(tmp_path)).get_all_trials(study._study_id)
    assert trial.state == TrialState.COMPLETE and trial.value == 0.7
    assert trial.intermediate_values == {1: 0.4, 2: 0.7, 3: 0.6}
    assert trial.user_attrs["chosen_epoch"] == 2 and trial.datetime_complete is not None


def test_a_replay_writes_one_study_per_cell_matching_its_rows(tmp_path: Path) -> None:
    from service.backends.replay.run import run_replay
    from service.core.config import build_config
    from service.core.table import load_table
    from tests.backends.replay.tables import emerald_table

    table = load_table(emerald_table(tmp_path / "emerald.parquet"))
    cfg = build_config({"name": "rep", "storage": str(tmp_path), "backend": "replay",
                        "replay": {"tables": [table.path], "workers": 1},
                        "searchers": ["random", "asha", "pbt"],
                        "searcher_options": {"pbt": {"population": 6}},
                        "budget": {"trials": 6, "epochs": 6}, "seeds": [0, 1]})
    summaries = run_replay(cfg, log=lambda *_: None)
    storage = read(journal_path(cfg.experiment_dir))
    studies = {s.study_name: s for s in storage.get_all_studies()}
    assert sorted(studies) == sorted(
        d.name for d in cfg.experiment_dir.iterdir() if parse_cell_name(d.name))
    assert len(studies) == len(summaries) == 6
    states: set[TrialState] = set()
    for name, study in studies.items():
        cell = parse_cell_name(name)
        assert study.user_attrs["searcher"] == cell.searcher
        assert study.user_attrs["seed"] == cell.seed
        assert study.user_attrs["table"] == table.path
        rows = pd.read_parquet(cfg.experiment_dir / name / "epochs.parquet")
        trials = storage.get_all_trials(study._study_id)
        assert len(trials) == rows["trial_id"].nunique()
        for trial in trials:
            mine = rows[rows["trial_id"] == trial.user_attrs["tune_trial_id"]]
            finite = mine[mine["val_acc"].map(math.isfinite)]
            assert trial.intermediate_values == dict(zip(finite["epoch"], finite["val_acc"],
                                                         strict=True))
            assert trial.datetime_start <= trial.datetime_complete
            states.add(trial.state)
            if cell.searcher == "pbt":
                assert "schedule" in trial.user_attrs
        summary = next(s for s in summaries if s["searcher"] == cell.searcher
                       and s["seed"] == cell.seed)
        best = max(t.value for t in trials if t.value is not None)
        assert best == pytest.approx(summary["best_observed"])
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states


def test_no_journal_with_dashboard_off(tmp_path: Path) -> None:
    from service.backends.replay.run import run_replay
    from service.core.config import build_config
    from service.core.table import load_table
    from tests.backends.replay.tables import emerald_table

    table = load_table(emerald_table(tmp_path / "emerald.parquet"))
    cfg = build_config({"name": "off", "storage": str(tmp_path), "backend": "replay",
                        "replay": {"tables": [table.path], "workers": 1},
                        "searchers": ["random"], "budget": {"trials": 2, "epochs": 2},
                        "dashboard": False})
    run_replay(cfg, log=lambda *_: None)
    assert not journal_path(cfg.experiment_dir).exists()
