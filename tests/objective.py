"""A cheap seeded objective with the trainable's interface, for driving searchers and
schedulers through real Tune experiments in seconds."""

from __future__ import annotations

import math
import os
import tempfile
import time

from service.space import resolve_config

OPTIMUM_LR = 1e-3
EPOCH_S = 0.6


def score(config: dict, epoch: int) -> float:
    """A smooth function of the hyperparameters that rises with epochs; best at lr=1e-3,
    adam, flip on, rotation 10."""
    hp = resolve_config({k: v for k, v in config.items() if k != "run"})
    value = 0.9 - 0.08 * (math.log10(hp["lr"]) - math.log10(OPTIMUM_LR)) ** 2
    value += {"adam": 0.05, "rmsprop": 0.02}.get(hp["optimizer"], 0.0)
    value += 0.02 * hp["flip"] - 0.001 * abs(hp["rotation"] - 10)
    return value * (1 - 0.5 ** epoch)


def objective_trainable(config: dict) -> None:
    """Reports `val_acc` per epoch with a checkpoint; lr below 3e-5 diverges (NaN), lr above
    3e-2 reports +inf, rotation 30 with sgd reports -inf, lr in [2e-2, 3e-2] raises."""
    from ray import tune

    hp = resolve_config({k: v for k, v in config.items() if k != "run"})
    epochs = int(config["run"]["epochs"])
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(open(os.path.join(folder, "epoch")).read())
    for epoch in range(start + 1, epochs + 1):
        time.sleep(EPOCH_S)
        if hp["lr"] < 3e-5:
            value = float("nan")
        elif hp["lr"] > 3e-2:
            value = float("inf")
        elif hp["rotation"] == 30 and hp["optimizer"] == "sgd":
            value = float("-inf")
        elif 2e-2 <= hp["lr"] <= 3e-2:
            raise RuntimeError("simulated trial failure")
        else:
            value = score(config, epoch)
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report({"val_acc": value, "started": time.time()},
                        checkpoint=tune.Checkpoint.from_directory(folder))
