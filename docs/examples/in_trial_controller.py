"""EMERALD-O's agents inside your own running trials: a plain Ray Tune function trainable
(torch, a tiny synthetic image problem) whose learning rate, optimizer and flip
augmentation the agents change between epochs.

    .venv/bin/python docs/examples/in_trial_controller.py --epochs 4 --samples 4

`InTrialSearch` is the Tuner's search_alg (it hosts the method's controller, shared by all
trials); in the trainable, `search.trial(config)` asks it for changes before each epoch and
tells it each epoch's metrics. `--method hypera` runs HYPERA's agents the same way.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from torch import nn

from service.backends.tune.intrial import InTrialSearch

PARAM_SPACE: dict[str, Any] = {
    "learning_rate": tune.loguniform(1e-3, 3e-1),
    "opt": tune.choice(["adam", "sgd"]),
    "hflip": tune.choice([False, True]),
    "hidden": 32,
}
NAMES = {"learning_rate": "lr", "opt": "optimizer", "hflip": "flip"}
"""Your names -> the catalogue's (service.core.space.HPARAMS), where they differ."""
OPTIONS = {"hypera": {"groups": "optimization=lr,optimizer;data=flip", "random_starts": 1}}
"""Each method's registry options (`python -m service searchers` lists them)."""


def make_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images: class 1 has a bright bar on the left or the right half, class 0 a bar
    at the top or the bottom, in noise (so a horizontal flip keeps the class)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(n, 8, 8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        lo = 0 if side[i] == 0 else 6
        if y[i] == 1:
            x[i, :, lo:lo + 2] += 1.0
        else:
            x[i, lo:lo + 2, :] += 1.0
    return x, y


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def make_trainable(search: InTrialSearch, epochs: int) -> Callable[[dict[str, Any]], None]:
    """The function trainable: an MLP trained `epochs` epochs, asking the method for
    changes before each one."""

    def train(config: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        x, y = make_data(seed=0)
        x_val, y_val = make_data(n=128, seed=1)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, config["hidden"]), nn.ReLU(),
                              nn.Linear(config["hidden"], 2))
        loss_fn = nn.CrossEntropyLoss()
        optimizer = None
        with search.trial(config) as trial:  # the end of the block ends the trial
            for _ in range(epochs):
                changes = trial.decide()  # {"learning_rate": ..., ...} or {}
                hp = trial.hp
                if optimizer is None or "opt" in changes:
                    optimizer = make_optimizer(hp["opt"], model.parameters(),
                                               hp["learning_rate"])
                for group in optimizer.param_groups:
                    group["lr"] = hp["learning_rate"]
                model.train()
                losses = []
                for batch in torch.randperm(len(x)).split(32):
                    xb = x[batch]
                    if hp["hflip"]:  # flip half the batch left-right
                        flip = torch.rand(len(xb)) < 0.5
                        xb = torch.where(flip[:, None, None], xb.flip(-1), xb)
                    loss = loss_fn(model(xb), y[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                model.eval()
                with torch.no_grad():
                    logits = model(x_val)
                    val_loss = loss_fn(logits, y_val).item()
                    val_acc = (logits.argmax(1) == y_val).float().mean().item()
                train_loss = sum(losses) / len(losses)
                trial.observe(val_acc=val_acc, val_loss=val_loss, train_loss=train_loss)
                tune.report({"val_acc": val_acc, "train_loss": train_loss,
                             "lr": hp["learning_rate"], "opt": hp["opt"],
                             "hflip": hp["hflip"]})

    return train


def main(epochs: int = 4, samples: int = 4, method: str = "emerald-dynamic",
         storage: str | None = None) -> tune.ResultGrid:
    """Run the Tuner (starting a local Ray of 2 CPUs unless one is running); results go to
    `storage` (default: a new temporary folder)."""
    storage = storage or tempfile.mkdtemp(prefix="in-trial-")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    search = InTrialSearch(method, epochs=epochs, num_samples=samples, names=NAMES,
                           options=OPTIONS.get(method), seed=0)
    tuner = tune.Tuner(
        make_trainable(search, epochs), param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=search, metric="val_acc", mode="max",
                                    num_samples=samples, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=storage, name=f"in-trial-{method}",
                                  verbose=0))
    results = tuner.fit()
    best = results.get_best_result()
    schedule = best.metrics_dataframe[["lr", "opt", "hflip", "val_acc"]]
    print(f"{method}: best val_acc {best.metrics['val_acc']:.3f}; its epochs:")
    print(schedule.to_string(index=False))
    print(f"results and the controller's step log (agent_steps.csv): "
          f"{Path(storage) / f'in-trial-{method}'}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--method", default="emerald-dynamic",
                        choices=("emerald-dynamic", "hypera"))
    parser.add_argument("--storage", default=None,
                        help="Tune's storage_path (default: a new temporary folder)")
    args = parser.parse_args()
    main(args.epochs, args.samples, args.method, args.storage)
