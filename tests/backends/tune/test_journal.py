"""The Tune backend's journal callback (service.backends.tune.journal) in real Tune
experiments with the cheap objective: every trial of the cell lands in its study, finished
ones COMPLETE with every epoch, errored ones FAIL, HyperBand's stopped ones PRUNED; a
shared driver writes one study per cell; the callback survives the Tuner's pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
from optuna.trial import TrialState

from service.backends.journal import journal_path
from service.backends.tune.experiment import build_tuner
from service.backends.tune.journal import JournalCallback
from service.backends.tune.shared import build_shared_tuner
from service.core.config import build_config
from service.core.layout import Cell
from tests.objective import objective_trainable

SPACE = {"lr": {"loguniform": [1e-4, 1e-2]}, "optimizer": {"choice": ["adam", "sgd"]},
         "rotation": 10, "flip": True}


def read(folder: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal_path(folder))))


def config(tmp_path: Path, searchers: list[str], space: dict | None = None, **more):
    return build_config({
        "name": "journal", "storage": str(tmp_path), "searchers": searchers,
        "backbones": ["resnet18@0.0625"], "budget": {"trials": 4, "epochs": 3},
        "concurrency": 2, "max_failures": 0, "space": space or SPACE,
        "dataset": {"name": "synthetic"}, **more})


def test_the_callback_pickles_with_its_settings_only() -> None:
    callback = JournalCallback("/x", SPACE, "val_acc", "max")
    callback._put(("noop", "k"))  # starts the writer thread
    copy = pickle.loads(pickle.dumps(callback))
    assert (copy.folder, copy.space, copy.metric, copy.mode) == ("/x", SPACE, "val_acc", "max")
    assert copy._thread is None
    callback._thread = None  # the stray event is dropped with the daemon thread


def test_a_cell_s_trials_stream_into_its_study(ray_session, tmp_path: Path) -> None:
    # lr in [2e-2, 3e-2] raises in the objective: one errored trial among finished ones
    cfg = config(tmp_path, ["random"], space={**SPACE, "lr": {"choice": [1e-3, 2.5e-2]}},
                 budget={"trials": 4, "epochs": 2})
    cell = Cell("random", "resnet18@0.0625", 0)
    results = build_tuner(cfg, cell, trainable=objective_trainable).fit()
    storage = read(cfg.experiment_dir)
    (study,) = storage.get_all_studies()
    assert study.study_name == cell.name
    assert study.user_attrs == {"searcher": "random", "backbone": "resnet18@0.0625",
                                "seed": 0, "metric": "val_acc"}
    trials = {t.user_attrs["tune_trial_id"]: t for t in storage.get_all_trials(
        study._study_id)}
    assert sorted(trials) == sorted(r.metrics["trial_id"] for r in results
                                    if r.metrics and "trial_id" in r.metrics)
    for result in results:
        trial = trials[result.metrics["trial_id"]]
        assert trial.params["lr"] == result.config["lr"]
        assert trial.params["optimizer"] == result.config["optimizer"]
        if result.error is not None:
            assert trial.state == TrialState.FAIL
        else:
            assert trial.state == TrialState.COMPLETE
            assert trial.intermediate_values == dict(zip(
                result.metrics_dataframe["training_iteration"],
                result.metrics_dataframe["val_acc"], strict=True))
            assert trial.value == max(trial.intermediate_values.values())
    assert {t.state for t in trials.values()} == {TrialState.COMPLETE, TrialState.FAIL}


def test_a_shared_driver_writes_a_study_per_cell_and_hyperband_prunes(ray_session,
                                                                       tmp_path: Path) -> None:
    cfg = config(tmp_path, ["random", "hyperband"], budget={"trials": 6, "epochs": 3},
                 searcher_options={"hyperband": {"reduction_factor": 3}})
    cells = [Cell(s, "resnet18@0.0625", 0) for s in cfg.searchers]
    build_shared_tuner(cfg, cells, parallel=2, trainable=objective_trainable).fit()
    storage = read(cfg.experiment_dir)
    studies = {s.study_name: s for s in storage.get_all_studies()}
    assert sorted(studies) == sorted(c.name for c in cells)
    random = storage.get_all_trials(studies[cells[0].name]._study_id)
    hyperband = storage.get_all_trials(studies[cells[1].name]._study_id)
    assert len(random) == 6 and {t.state for t in random} == {TrialState.COMPLETE}
    assert TrialState.PRUNED in {t.state for t in hyperband}
    assert not [t for t in random + hyperband if t.state == TrialState.RUNNING]
