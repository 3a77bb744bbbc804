"""The Tune trainable: each trial (a Ray worker actor, reused across trials) trains one
backbone with the trial's hyperparameters on the device Ray assigned, reports every epoch
and checkpoints every epoch, so schedulers can pause, resume and clone trials.

A trial config holds the hyperparameters (see service.space) plus `run`, the constants of
the experiment (`RunSettings`). An optional controller, a named Ray actor, may change the
hyperparameters every `controller_every` epochs inside the running trial (EMERALD-O's
episodic schedule, seed 004's per-epoch optimizer choice).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.data import Splits, load_splits
from service.space import resolve_config
from service.trainer import HParams, Trainer

CHECKPOINT_FILE = "trial_state.pt"


@dataclass(frozen=True)
class RunSettings:
    """Experiment constants every trial of one Tune experiment shares."""

    backbone: str
    epochs: int
    seed: int = 0
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "digits"})
    threads: int = 1
    controller: str | None = None
    controller_every: int = 1
    weights: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned to this worker (logical ones included)."""
    import ray

    # Outside Ray (unit tests, a plain driver) there is no assignment; asking would start Ray.
    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


def node_id() -> str:
    """The Ray node this trial runs on (several nodes may share one IP address)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def pick_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    if assigned_gpus() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def load_data(run: RunSettings) -> Splits:
    """The trial's data splits; cached per worker process, so reused actors load once."""
    ds = dict(run.dataset)
    name = ds.pop("name")
    return load_splits(name, seed=run.seed, **ds)


def split_config(config: dict[str, Any]) -> tuple[RunSettings, dict[str, Any]]:
    """Separate experiment constants from the (resolved) hyperparameters."""
    raw = {k: v for k, v in config.items() if k != "run"}
    run = RunSettings(**config["run"])
    hp = resolve_config(raw)
    backbone = run.backbone
    if "width" in raw:  # an architecture dimension chosen by the searcher
        name = backbone.split("@")[0]
        backbone = f"{name}@{float(hp['width']):g}"
    return RunSettings(**{**run.as_dict(), "backbone": backbone}), hp


def hp_metrics(hp: HParams) -> dict[str, Any]:
    """The hyperparameters in force, as scalars TensorBoard can plot against epochs."""
    out: dict[str, Any] = {}
    for key, value in hp.as_dict().items():
        out[f"hp_{key}"] = value if not isinstance(value, bool) else int(value)
    return out


def epoch_report(trainer: Trainer, metrics: Any, splits: Splits) -> dict[str, Any]:
    """The per-epoch result dict every searcher, scheduler and report reads. A diverged
    epoch is not evaluated: NaN metrics plus `diverged` are the failure marker the result
    guard turns into a failed trial, and the trial ends cleanly instead of erroring."""
    diverged = metrics.diverged
    val_acc, val_loss = ((float("nan"), float("nan")) if diverged
                         else trainer.evaluate(splits.val_x, splits.val_y))
    report = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "train_acc": metrics.train_acc,
        "train_loss": metrics.train_loss,
        "grad_norm": metrics.grad_norm,
        "epoch_time_s": metrics.epoch_time_s,
        "images_per_s": metrics.images_per_s,
        "model_size_mb": trainer.model_size_mb,
        "num_parameters": trainer.num_parameters,
        "epoch": trainer.epoch,
        "diverged": diverged,
        "device": str(trainer.device),
    }
    report.update(hp_metrics(trainer.hp))
    return report


def _step_summary(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a controller learns from a step: its last epoch's report plus the gradient norms
    of all its epochs (the instability the reward penalises)."""
    if not reports:
        return None
    return {**reports[-1], "step_grad_norms": [r.get("grad_norm") for r in reports]}


def _ask_controller(name: str, trial_id: str, trainer: Trainer,
                    reports: list[dict[str, Any]]) -> HParams | None:
    import ray

    controller = ray.get_actor(name)
    changes = ray.get(controller.decide.remote(trial_id, trainer.epoch, _step_summary(reports),
                                               trainer.hp.as_dict()))
    if not changes:
        return None
    return HParams.from_config(resolve_config({**trainer.hp.as_dict(), **changes}))


def _finish_controller(name: str, trial_id: str, reports: list[dict[str, Any]]) -> None:
    import ray

    ray.get(ray.get_actor(name).finish.remote(trial_id, _step_summary(reports)))


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable (see module docstring)."""
    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint
    run, hp_config = split_config(config)
    torch.set_num_threads(max(1, run.threads))
    device = pick_device()
    placement = {"gpu_ids": ",".join(assigned_gpus()), "node_id": node_id()}
    splits = load_data(run)
    hp = HParams.from_config(hp_config)
    trainer = Trainer.build(run.backbone, splits, hp, device=device, seed=run.seed,
                            weights=run.weights)

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location=device,
                               weights_only=True)
        trainer.load_state_dict(state)

    trial_id = tune.get_context().get_trial_id() or "local"
    step: list[dict[str, Any]] = []  # reports since the controller last decided
    while trainer.epoch < run.epochs:
        if run.controller and trainer.epoch % max(1, run.controller_every) == 0:
            new_hp = _ask_controller(run.controller, trial_id, trainer, step)
            step = []
            if new_hp is not None:
                trainer.apply(new_hp)
        metrics = trainer.train_epoch()
        last = epoch_report(trainer, metrics, splits)
        # Where Ray put the trial, and when (Tune's own `timestamp` has whole seconds only).
        last.update(placement, unix_time=time.time())
        if not math.isfinite(last["val_loss"]):
            last.update(val_acc=float("nan"), diverged=True)
        step.append(last)
        if last["diverged"]:
            break
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), os.path.join(folder, CHECKPOINT_FILE))
            tune.report(last, checkpoint=tune.Checkpoint.from_directory(folder))
    if run.controller:
        _finish_controller(run.controller, trial_id, step)
    if step and step[-1]["diverged"]:
        tune.report(step[-1])


def final_test(config: dict[str, Any]) -> dict[str, Any]:
    """Train the chosen configuration once more from scratch and score it on the test split
    that no searcher saw."""
    run, hp_config = split_config(config)
    torch.set_num_threads(max(1, run.threads))
    device = pick_device()
    splits = load_data(run)
    trainer = Trainer.build(run.backbone, splits, HParams.from_config(hp_config),
                            device=device, seed=run.seed, weights=run.weights)
    metrics = None
    while trainer.epoch < run.epochs:
        metrics = trainer.train_epoch()
        if metrics.diverged:
            return {"test_acc": float("nan"), "test_loss": float("nan"), "diverged": True}
    test_acc, test_loss = trainer.evaluate(splits.test_x, splits.test_y)
    val_acc, _ = trainer.evaluate(splits.val_x, splits.val_y)
    return {"test_acc": test_acc, "test_loss": test_loss, "retrain_val_acc": val_acc,
            "diverged": False, "train_acc": metrics.train_acc if metrics else float("nan")}
