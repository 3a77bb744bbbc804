"""The Tune trainable, driven without a Ray cluster (Tune's session functions replaced by
recorders), and once through a real Tuner with an in-training controller actor."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from service.backends.tune.trainable import RunSettings, final_test, split_config, train_trial
from service.core.api import Schedule

RUN = RunSettings(backbone="resnet18@0.0625", epochs=2, seed=0,
                  dataset={"name": "synthetic", "max_train": 120})
HP = {"optimizer": "adam", "lr": 3e-3, "flip": True, "rotation": 10, "batch_size": 32}
METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "grad_norm", "epoch_time_s",
           "images_per_s", "model_size_mb", "hp_lr", "hp_optimizer", "hp_flip")


class FakeSession:
    """Records reports and keeps each reported checkpoint folder."""

    def __init__(self, tmp: Path, resume_from: str | None = None) -> None:
        self.tmp, self.reports, self.checkpoints = tmp, [], []
        self.resume_from = resume_from

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tune, "report", self.report)
        monkeypatch.setattr(tune, "get_checkpoint", self.get_checkpoint)

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            keep = self.tmp / f"ckpt_{len(self.checkpoints)}"
            shutil.copytree(checkpoint.path, keep)
            self.checkpoints.append(str(keep))

    def get_checkpoint(self) -> Any:
        return tune.Checkpoint.from_directory(self.resume_from) if self.resume_from else None


def config(run: RunSettings = RUN, **hp: Any) -> dict[str, Any]:
    return {**HP, **hp, "run": run.as_dict()}


def test_reports_every_epoch_with_checkpoint(monkeypatch, tmp_path) -> None:
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config())
    assert [r["epoch"] for r in session.reports] == [1, 2]
    assert len(session.checkpoints) == 2
    for report in session.reports:
        for key in METRICS:
            assert key in report, key
        assert 0.0 <= report["val_acc"] <= 1.0
        assert report["hp_lr"] == pytest.approx(3e-3) and report["hp_optimizer"] == "adam"
        assert report["images_per_s"] > 0 and report["diverged"] is False


def test_resume_continues_the_epoch_count(monkeypatch, tmp_path) -> None:
    first = FakeSession(tmp_path / "a")
    first.install(monkeypatch)
    train_trial(config())
    longer = RunSettings(**{**RUN.as_dict(), "epochs": 4})
    resumed = FakeSession(tmp_path / "b", resume_from=first.checkpoints[-1])
    resumed.install(monkeypatch)
    train_trial(config(longer))
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    straight = FakeSession(tmp_path / "c")
    straight.install(monkeypatch)
    train_trial(config(longer))
    # Seeded batches and augmentation per epoch: resuming equals training straight through.
    assert resumed.reports[0]["train_loss"] == pytest.approx(
        straight.reports[2]["train_loss"], rel=1e-4)


def test_divergence_ends_the_trial_with_a_marker(monkeypatch, tmp_path) -> None:
    import dataclasses

    import service.backends.tune.trainable as trainable

    clean = trainable.load_data(RUN)
    poisoned = dataclasses.replace(clean, train_x=clean.train_x * float("nan"))
    monkeypatch.setattr(trainable, "load_data", lambda run: poisoned)
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config())  # returns normally: the trial ends, it does not error
    assert len(session.reports) == 1 and not session.checkpoints
    last = session.reports[0]
    assert last["diverged"] is True and math.isnan(last["val_acc"])


def test_width_dimension_overrides_backbone_width() -> None:
    run, hp = split_config(config(width=0.125))
    assert run.backbone == "resnet18@0.125"
    run, hp = split_config(config())
    assert run.backbone == "resnet18@0.0625"


def test_a_schedule_that_changes_the_width_is_refused_before_training() -> None:
    """A trial's weights fix its architecture: no retraining may pretend a width switch."""
    schedule = Schedule([(1, {**HP, "width": 0.0625}), (2, {**HP, "width": 0.125})], 2)
    with pytest.raises(ValueError, match="changes width at epoch 2"):
        final_test(config(width=0.0625), schedule.to_json())


def test_final_test_scores_the_test_split() -> None:
    result = final_test(config())
    assert 0.0 <= result["test_acc"] <= 1.0 and result["diverged"] is False
    # Iranfar et al. Table V's columns of the chosen network
    assert result["model_size_mb"] > 0 and result["num_parameters"] > 0
    assert result["train_ms_per_batch"] > 0 and result["infer_ms_per_batch"] > 0
    for key in ("test_precision_macro", "test_recall_macro", "test_f1_macro"):
        assert 0.0 <= result[key] <= 1.0, key


def test_final_test_of_the_trials_own_weights_equals_the_retraining(monkeypatch,
                                                                    tmp_path) -> None:
    """The retraining reproduces the trial bit for bit on the CPU, so scoring the trial's
    last checkpoint gives the same test result without training (issue: time goes into
    training); `trained_weights` offers it only where that holds."""
    import pandas as pd

    from service.backends.tune.experiment import trained_weights

    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config())
    frame = pd.DataFrame(session.reports)
    checkpoint = tune.Checkpoint.from_directory(session.checkpoints[-1])
    best = {"config": config(), "init_seed": int(frame.init_seed.iloc[-1]),
            "row": frame.iloc[0].to_dict(), "last": frame.iloc[-1].to_dict(),
            "checkpoint": checkpoint}
    state = trained_weights(best, "searcher")
    assert state is not None and state["checkpoint"]["epoch"] == RUN.epochs
    reused, retrained = final_test(config(), state=state), final_test(config())
    assert reused["retrained"] is False and retrained["retrained"] is True
    for key in ("test_acc", "test_loss", "retrain_val_acc", "train_acc", "epochs",
                "test_f1_macro"):
        assert reused[key] == pytest.approx(retrained[key], abs=1e-6), key
    # where retraining would give another network, the test retrains
    assert trained_weights(best, "population") is None
    assert trained_weights(best, "controller") is None  # its best epoch was not its last
    assert trained_weights({**best, "row": best["last"]}, "controller") is not None
    assert trained_weights({**best, "last": {**best["last"], "epoch": 1}}, "searcher") is None
    assert trained_weights({**best, "init_seed": best["init_seed"] + 1}, "searcher") is None
    assert trained_weights({**best, "checkpoint": None}, "searcher") is None
    assert trained_weights({**best, "checkpoint": tune.Checkpoint.from_directory(
        session.checkpoints[0])}, "searcher") is None  # a checkpoint of another epoch


def test_macro_scores_are_scikit_learns_macro_averages() -> None:
    import torch

    from service.backends.tune.trainable import macro_scores

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    got = macro_scores(labels, predicted)
    # Per class precision 1/2, 2/3, 1; recall 1/2, 1, 1/2.
    assert got["test_precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert got["test_recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((1 / 2, 1 / 2), (2 / 3, 1), (1, 1 / 2))]
    assert got["test_f1_macro"] == pytest.approx(sum(f1) / 3)
    from sklearn.metrics import precision_recall_fscore_support

    gen = torch.Generator().manual_seed(0)
    for classes in (2, 5, 10):  # classes missing from one side or both, and a constant guess
        labels = torch.randint(0, classes, (40,), generator=gen)
        for predicted in (torch.randint(0, classes + 2, (40,), generator=gen),
                          torch.full((40,), 1), labels):
            p, r, f, _ = precision_recall_fscore_support(
                labels.numpy(), predicted.numpy(), average="macro", zero_division=0)
            got = macro_scores(labels, predicted)
            assert (got["test_precision_macro"], got["test_recall_macro"],
                    got["test_f1_macro"]) == pytest.approx((p, r, f), abs=1e-12)


def test_plateaued_counts_epochs_since_the_best() -> None:
    from service.core.api import plateaued

    assert not plateaued([0.1, 0.2, 0.3], 2)
    assert not plateaued([0.3, 0.2], 2)
    assert plateaued([0.3, 0.2, 0.3], 2)  # equal is no improvement
    assert plateaued([0.5, float("nan"), float("nan")], 2)
    assert not plateaued([0.5, 0.1, 0.1], 0)  # 0: never
    assert plateaued([1.0, 0.5, 0.4], 1, mode="min") is False
    assert plateaued([0.5, 0.6, 0.7], 2, mode="min")


def test_early_stopping_ends_the_trial_after_patience_epochs(monkeypatch, tmp_path) -> None:
    """A rate so small nothing changes: val_acc never improves on epoch 1's, so with
    patience 2 the trial ends after epoch 3 of 6, and a resumed trial keeps counting."""
    run = RunSettings(**{**RUN.as_dict(), "epochs": 6, "patience": 2})
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config(run, optimizer="sgd", lr=1e-7, flip=False, rotation=0))
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    (tmp_path / "again").mkdir()
    resumed = FakeSession(tmp_path / "again", resume_from=session.checkpoints[1])
    resumed.install(monkeypatch)
    train_trial(config(run, optimizer="sgd", lr=1e-7, flip=False, rotation=0))
    assert [r["epoch"] for r in resumed.reports] == [3]


def test_controller_switches_hyperparameters_inside_a_running_trial(ray_session, tmp_path):
    """A named actor changes optimizer and rate every epoch; the trial applies them in
    place and reports what is in force."""
    import ray

    @ray.remote(num_cpus=0)
    class FixedChanges:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def decide(self, obs):
            self.calls.append((obs.trial_id, obs.epoch))
            return {1: {"optimizer": "sgd", "lr": 0.05}, 2: {"lr": 0.01}}.get(obs.epoch, {})

        def learn(self):
            return {}

        def finish(self, obs):
            self.calls.append((obs.trial_id, -1))
            self.last_step = obs.rows

        def seen(self):
            return self.calls

    actor = FixedChanges.options(name="test-schedule").remote()
    run = RunSettings(**{**RUN.as_dict(), "epochs": 3, "controller": "test-schedule"})
    results = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": 1}), param_space=config(run),
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="ctl", verbose=0),
    ).fit()
    assert not results.errors
    df = results[0].metrics_dataframe
    assert list(df["hp_optimizer"]) == ["adam", "sgd", "sgd"]
    assert list(df["hp_lr"]) == pytest.approx([3e-3, 0.05, 0.01])
    assert [epoch for _, epoch in ray.get(actor.seen.remote())] == [0, 1, 2, -1]
    # Every row carries the schedule so far; the last one is the whole trial's.
    schedule = Schedule.from_json(df["schedule"].iloc[-1])
    assert [schedule.at(e)["optimizer"] for e in (1, 2, 3)] == ["adam", "sgd", "sgd"]
    assert df["controller_wait_s"].iloc[1] >= 0 and df["elapsed_s"].is_monotonic_increasing
    ray.kill(actor)


def test_fractional_gpus_pack_two_trials_per_logical_gpu(ray_session, tmp_path) -> None:
    """0.5 GPU per trial on 2 logical GPUs: 4 trials run at once, two per GPU id; without
    CUDA hardware the trial falls back to the CPU."""
    run = RunSettings(**{**RUN.as_dict(), "epochs": 1})
    results = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": 0.5, "gpu": 0.5}),
        param_space={**config(run), "lr": tune.grid_search([1e-3, 2e-3, 3e-3, 4e-3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=4, reuse_actors=False),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="gpu", verbose=0),
    ).fit()
    assert not results.errors
    ids = sorted(r.metrics["gpu_ids"] for r in results)
    assert ids == ["0", "0", "1", "1"]
    assert {r.metrics["device"] for r in results} == {"cpu"}


# ------------------------------------------------ Iranfar et al. V-E: early termination, budget


def _run(**changes: Any) -> RunSettings:
    return RunSettings(**{**RUN.as_dict(), **changes})


def test_slow_batches_end_the_trial_at_once_with_reward_minus_one(monkeypatch, tmp_path):
    run = _run(epochs=3, termination={"batch_time_s": 1e-9, "batch_patience": 2},
               reward={"c_acc": 0.5})
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config(run))
    assert len(session.reports) == 1 and not session.checkpoints  # ended, no checkpoint
    row = session.reports[0]
    assert row["terminated"] == "batch_time" and row["reward"] == -1.0
    assert row["images_per_s"] * row["epoch_time_s"] == pytest.approx(64)  # 2 batches of 32
    from service.backends.tune.searching import is_failure

    assert is_failure(row, "val_acc")  # every searcher sees a failed trial


def test_loss_above_threshold_restarts_once_from_new_weights_then_terminates(
        monkeypatch, tmp_path) -> None:
    """An unreachable threshold: epoch 1 violates it, the trial restarts with the same
    hyperparameters from fresh weights (checkpointed), the next violation ends it."""
    run = _run(epochs=4, termination={"loss": 1e-6, "loss_patience": 1, "restarts": 1},
               reward={"c_acc": 0.5})
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial(config(run))
    first, second = session.reports
    assert first["terminated"] == "" and first["restarts"] == 1
    # a row names the initial weights that trained it: the run's, then the restart's
    assert first["init_seed"] == RUN.seed and first["reward"] > -1.0
    assert second["init_seed"] != RUN.seed
    assert second["terminated"] == "loss" and second["reward"] == -1.0
    assert second["epoch"] == 1 and second["restarts"] == 1  # the restart's first epoch
    assert second["train_loss"] != pytest.approx(first["train_loss"], rel=1e-6)  # new init
    assert len(session.checkpoints) == 1
    # a trial resumed from the restart's checkpoint keeps its count: it ends the same way
    resumed = FakeSession(tmp_path / "again", resume_from=session.checkpoints[0])
    (tmp_path / "again").mkdir()
    resumed.install(monkeypatch)
    train_trial(config(run))
    assert [r["terminated"] for r in resumed.reports] == ["loss"]
    assert resumed.reports[0]["train_loss"] == pytest.approx(second["train_loss"], rel=1e-5)


def test_loss_met_epoch_and_a_config_epoch_budget(monkeypatch, tmp_path) -> None:
    run = _run(epochs=3, termination={"loss": 100.0, "loss_patience": 1}, reward={"c_acc": 1.0})
    session = FakeSession(tmp_path)
    session.install(monkeypatch)
    train_trial({**config(run), "epochs": 2})  # Iranfar et al. VI-A: a shorter episode
    assert [r["epoch"] for r in session.reports] == [1, 2]
    assert all(r["loss_met_epoch"] == 1 and r["terminated"] == "" for r in session.reports)
    assert session.reports[-1]["reward"] == pytest.approx(session.reports[-1]["val_acc"])
    from service.core.api import EPOCH_FIELDS

    missing = set(EPOCH_FIELDS) - set(session.reports[-1])
    assert not missing, missing  # the documented row is the reported row


# ------------------------------------------------ your model: import paths and torchvision


def test_run_settings_carry_the_configs_own_models_through_a_trial_config() -> None:
    """The trainable's settings are the config's `termination`, `reward` and `perf` models
    (one schema, one validator), not copies: a cell's settings equal the config's and
    survive the plain dict a trial config carries."""
    from service.backends.tune.experiment import cell_plan
    from service.core.config import build_config
    from service.core.layout import Cell

    cfg = build_config({"searchers": ["random"], "backbones": ["resnet18@0.0625"],
                        "termination": {"loss": 2.5, "restarts": 2},
                        "reward": {"c_acc": 0.7}, "perf": {"report_ahead": False}})
    _, _, run = cell_plan(cfg, Cell("random", "resnet18@0.0625", 0))
    assert run.termination == cfg.termination and run.reward == cfg.reward
    assert run.perf == cfg.perf
    assert RunSettings(**run.as_dict()) == run
    with pytest.raises(ValueError, match="loss_limit"):  # the old copied name is gone
        RunSettings(**{**RUN.as_dict(), "loss_limit": 1.0})
    with pytest.raises(ValueError, match="restarts"):  # the config's own bounds apply
        RUN.replace(termination={"restarts": -1})


def test_an_import_path_and_a_torchvision_model_train_an_epoch_as_trials(ray_session,
                                                                        tmp_path) -> None:
    """`tests.user_models:small_cnn` (called with num_classes, in_channels, image_size,
    width) and `torchvision:mobilenet_v3_small` (grey digits repeated to 3 channels) train
    as Tune trials on Ray workers, each reporting its own model's size."""
    results = {}
    for backbone in ("tests.user_models:small_cnn@0.5", "torchvision:mobilenet_v3_small"):
        run = RunSettings(backbone=backbone, epochs=1, seed=0,
                          dataset={"name": "digits", "image_size": 16, "max_train": 64})
        grid = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": 1}),
            param_space={**HP, "flip": False, "rotation": 0, "run": run.as_dict()},
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0,
                                      name=backbone.replace(":", "-").replace("@", "-")),
        ).fit()
        assert not grid.errors, grid.errors
        results[backbone] = grid[0].metrics
    small, mobile = results.values()
    assert small["epoch"] == 1 and 0.0 <= small["val_acc"] <= 1.0
    assert small["num_parameters"] < 10_000 < mobile["num_parameters"]


def _feed_config(**perf: Any) -> dict[str, Any]:
    run = RunSettings(backbone="resnet18@0.0625", epochs=3, seed=1,
                      dataset={"name": "synthetic", "max_train": 100}, perf=perf)
    return {**HP, "batch_size": 10, "run": run.as_dict()}


def test_epochs_ahead_give_the_same_rows_and_checkpoints_as_epochs_in_turn() -> None:
    """One epoch ahead of the reports (the default), a trial trains what it trains in turn:
    the same rows, and each epoch's checkpoint holds that epoch's weights although the next
    epoch was training meanwhile; each folder is the feed's until the next is asked for."""
    import torch

    from service.backends.tune.trainable import EpochFeed, load_state

    def epochs(ahead: bool) -> tuple[list[dict], list[dict]]:
        feed = EpochFeed(_feed_config(), trial_id="t", ahead=ahead)
        rows, states, last = [], [], None
        for row, folder in feed:
            assert last is None or not Path(last).exists()  # the previous: removed
            rows.append(row)
            states.append(load_state(folder))
            last = folder
        feed.close()
        assert not Path(last).exists()
        return rows, states

    (rows, states), (ahead_rows, ahead_states) = epochs(False), epochs(True)
    keys = ("epoch", "val_acc", "val_loss", "train_loss", "grad_norm", "schedule")
    assert [[r[k] for k in keys] for r in ahead_rows] == [[r[k] for k in keys] for r in rows]
    for state, ahead_state in zip(states, ahead_states, strict=True):
        model, ahead_model = state["model"], ahead_state["model"]
        assert all(torch.equal(model[k], ahead_model[k]) for k in model)


def test_the_next_epoch_trains_while_the_last_is_reported_and_close_ends_it() -> None:
    """After the caller took epoch 1, epoch 2 becomes ready without being asked for (it
    trained meanwhile); `close` ends the trial there, its thread and its folders with it."""
    import time

    from service.backends.tune.trainable import EpochFeed

    feed = EpochFeed(_feed_config(), trial_id="t")
    assert feed.ahead
    _, first = next(feed)
    deadline = time.time() + 120
    while feed._slot.empty() and time.time() < deadline:
        time.sleep(0.02)
    ready = feed._slot.queue[0]
    assert ready[0] == "epoch" and ready[1][0]["epoch"] == 2
    feed.close()
    assert not feed._thread.is_alive()
    assert not Path(first).exists() and not Path(ready[1][1]).exists()


def test_close_cancels_an_epoch_in_flight_at_its_next_batch() -> None:
    from service.training.data import load_splits
    from service.training.trainer import EpochCancelled, HParams, Trainer

    trainer = Trainer.build("resnet18@0.0625", load_splits("synthetic", max_train=100),
                            HParams(optimizer="sgd", lr=0.01, batch_size=10), seed=0)
    import threading

    trainer.cancel = threading.Event()
    trainer.cancel.set()
    with pytest.raises(EpochCancelled, match="after 0 batches"):
        trainer.train_epoch()
    assert trainer.epoch == 0
    trainer.cancel.clear()
    assert trainer.train_epoch().train_loss > 0 and trainer.epoch == 1


def test_epochs_go_in_turn_with_a_controller_or_the_switch_off_and_errors_reach_the_caller(
        ) -> None:
    from service.backends.tune.trainable import EpochFeed

    assert not EpochFeed(_feed_config(report_ahead=False)).ahead
    with_controller = _feed_config()
    with_controller["run"] = {**with_controller["run"], "controller": "some-actor"}
    # a controller decides between epochs: the trial waits for each report (its loop
    # starts only when asked, so no controller is looked up here)
    assert not EpochFeed(with_controller).ahead
    broken = _feed_config()
    broken["run"] = {**broken["run"], "backbone": "no-such-backbone"}
    feed = EpochFeed(broken)
    with pytest.raises(Exception, match="no-such-backbone"):
        next(feed)
    feed.close()


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_new_feed_removes_the_checkpoint_folders_dead_processes_of_this_machine_left(
        monkeypatch, tmp_path) -> None:
    """A trial process killed between two reports (SIGKILL, a lost node) leaves its epoch
    folders in the temp folder; the next feed on the machine removes them, and only them:
    not a live process's, not another machine's, not one without an owner in its name."""
    import os
    import tempfile

    from service.backends.tune.trainable import CHECKPOINT_PREFIX, EpochFeed, _host_tag

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    host = _host_tag()
    dead = tmp_path / f"{CHECKPOINT_PREFIX}{_dead_pid()}@{host}-abc"
    other = "0" * 8 if host != "0" * 8 else "1" * 8
    kept = [tmp_path / f"{CHECKPOINT_PREFIX}{os.getpid()}@{host}-live",
            tmp_path / f"{CHECKPOINT_PREFIX}{_dead_pid()}@{other}-other",
            tmp_path / f"{CHECKPOINT_PREFIX}oldstyle"]
    for folder in (dead, *kept):
        folder.mkdir()
        (folder / "trial_state.pt").write_bytes(b"x")
    feed = EpochFeed(_feed_config(), trial_id="t", ahead=False)
    assert not dead.exists() and all(k.exists() for k in kept)
    _, folder = next(feed)
    assert Path(folder).parent == tmp_path
    assert Path(folder).name.startswith(f"{CHECKPOINT_PREFIX}{os.getpid()}@{host}-")
    feed.close()
    assert not Path(folder).exists()
