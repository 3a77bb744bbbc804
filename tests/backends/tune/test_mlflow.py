"""`mlflow: true`: Ray Tune's MLflowLoggerCallback logs each trial as an MLflow run tagged
with its searcher, backbone and seed (also in a shared driver, and with pending trials that
Tune stops before they start); the switch is refused with one line where MLflow is not
installed, and on the replay backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from service.core.api import ConfigError
from service.core.config import build_config
from service.core.layout import Cell

RAW = {"name": "ml", "searchers": ["random"], "backbones": ["resnet18@0.0625"],
       "budget": {"trials": 3, "epochs": 2}, "dataset": {"name": "synthetic"},
       "space": {"lr": {"loguniform": [1e-4, 1e-2]}, "optimizer": {"choice": ["adam", "sgd"]}},
       "max_failures": 0, "mlflow": True}


def test_the_switch_is_refused_without_mlflow(monkeypatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^mlflow: MLflow is not installed; pip install "
                                          r"-e \"\.\[mlflow\]\""):
        build_config({**RAW, "storage": str(tmp_path)})
    assert not build_config({**RAW, "storage": str(tmp_path), "mlflow": False}).mlflow


def test_the_switch_is_refused_on_the_replay_backend(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from service.core.table import load_table
    from tests.backends.replay.tables import emerald_table

    table = load_table(emerald_table(tmp_path / "t.parquet"))
    with pytest.raises(ConfigError, match="mlflow: logs the Tune backend's trials"):
        build_config({"name": "r", "storage": str(tmp_path), "backend": "replay",
                      "replay": {"tables": [table.path]}, "mlflow": True})


def test_every_trial_is_a_tagged_run(ray_session, tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    from service.backends.tune.experiment import mlflow_uri, prepare_mlflow
    from service.backends.tune.shared import build_shared_tuner
    from tests.objective import objective_trainable

    cfg = build_config({**RAW, "storage": str(tmp_path), "searchers": ["random", "hyperband"],
                        "budget": {"trials": 4, "epochs": 3}})
    prepare_mlflow(cfg)
    cells = [Cell(s, "resnet18@0.0625", 0) for s in cfg.searchers]
    results = build_shared_tuner(cfg, cells, parallel=2, trainable=objective_trainable).fit()
    assert not [r for r in results if r.error is not None]
    runs = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg)).search_runs(
        [mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg)).get_experiment_by_name(
            "ml").experiment_id])
    started = [r for r in results if r.metrics]
    assert len(runs) == len(started)
    assert sorted(r.data.tags["searcher"] for r in runs) == sorted(
        r.config["run"]["searcher"] for r in started)
    assert {(r.data.tags["backbone"], r.data.tags["seed"]) for r in runs} == {
        ("resnet18@0.0625", "0")}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("val_acc" in r.data.metrics for r in runs)
