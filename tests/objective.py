"""A cheap seeded objective with the trainable's interface, for driving searchers and
schedulers through real Tune experiments in seconds."""

from __future__ import annotations

import os
import tempfile
import time

from service.core.space import resolve_config
from service.testing import OPTIMUM_LR, score

__all__ = ["EPOCH_S", "OPTIMUM_LR", "objective_trainable", "score"]

EPOCH_S = 0.6


def objective_trainable(config: dict) -> None:
    """Reports `val_acc` per epoch with a checkpoint; lr below 3e-5 diverges (NaN), lr above
    3e-2 reports +inf, rotation 30 with sgd reports -inf, lr in [2e-2, 3e-2] raises. Also
    `train_ms_per_batch`, 1000 x lr: a second objective (multi-objective entries)."""
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
            tune.report({"val_acc": value, "started": time.time(),
                         "train_ms_per_batch": 1000.0 * hp["lr"]},
                        checkpoint=tune.Checkpoint.from_directory(folder))
