"""Small recorded tables the replay tests generate (no training): learning curves that are
smooth functions of the hyperparameters, with seed noise, so optima are known."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core.table import TableMeta, write_table

EMERALD_SPACE: dict[str, Any] = {
    "flip": {"choice": [False, True]}, "rotation": {"choice": [0, 20]},
    "shift": {"choice": [False, True]}, "optimizer": {"choice": ["adam", "sgd", "rmsprop"]},
    "lr": {"loguniform": [1e-5, 1e-1]},
}
LRS = tuple(float(f"{v:.6g}") for v in np.geomspace(1e-5, 1e-1, 5))


def curve(hp: dict[str, Any], seed: int, epochs: int) -> np.ndarray:
    """Validation accuracy per epoch: best near lr 1e-3 with adam, flip helps a little,
    rotation hurts a little; seed noise of about half a point."""
    quality = 0.9 - 0.08 * (math.log10(hp["lr"]) + 3) ** 2
    quality += {"adam": 0.0, "rmsprop": -0.03, "sgd": -0.08}[hp["optimizer"]]
    quality += 0.02 * hp["flip"] - 0.01 * (hp["rotation"] > 0) + 0.005 * hp["shift"]
    rng = np.random.default_rng([seed, int(1e6 * hp["lr"]), hp["rotation"]])
    t = np.arange(1, epochs + 1)
    return np.clip(max(0.1, quality) * (1 - np.exp(-t / 3)) + rng.normal(0, 0.005, epochs),
                   0, 1)


def emerald_table(path: Path, epochs: int = 6, seeds: tuple[int, ...] = (0, 1),
                  diverge_lr: float | None = 0.1) -> Path:
    """A table over EMERALD-O's space at 5 log points of lr; lr 0.1 with sgd diverges at
    epoch 2 (a NaN row ends the curve, as the trainable reports it)."""
    rows = []
    for flip, rot, shift, opt, lr in itertools.product((False, True), (0, 20), (False, True),
                                                       ("adam", "sgd", "rmsprop"), LRS):
        hp = {"flip": flip, "rotation": rot, "shift": shift, "optimizer": opt, "lr": lr}
        for seed in seeds:
            values = curve(hp, seed, epochs)
            last = 2 if (diverge_lr is not None and lr == diverge_lr and opt == "sgd") \
                else epochs
            for e in range(1, last + 1):
                diverged = e == last and last < epochs
                rows.append({**hp, "seed": seed, "epoch": e,
                             "val_acc": math.nan if diverged else float(values[e - 1]),
                             "val_loss": math.nan if diverged else 1 - float(values[e - 1]),
                             "train_acc": float(values[e - 1]), "train_loss": 1.0,
                             "grad_norm": 1.0, "epoch_time_s": 0.5 + 0.1 * (opt == "sgd"),
                             "diverged": diverged,
                             "test_acc": float(values[e - 1]) - 0.01 if e == epochs
                             else math.nan})
    meta = TableMeta(space=EMERALD_SPACE, metric="val_acc", mode="max", dataset="generated",
                     backbone="none", command="tests/backends/replay/tables.py")
    return write_table(pd.DataFrame(rows), meta, path)


def own_names_table(path: Path, epochs: int = 4, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """A table recorded elsewhere, with names outside the catalogue (as LCBench's): the
    number of layers, units per layer and a learning rate called `learning_rate`."""
    rows = []
    for layers, units, lr in itertools.product((1, 2, 3), (64, 256), LRS):
        peak = 0.9 - 0.05 * abs(math.log10(lr) + 3) - 0.02 * abs(layers - 2) + units / 1e4
        for seed in seeds:
            noise = np.random.default_rng(seed * 1000 + layers * 10 + units).normal(0, .005)
            for e in range(1, epochs + 1):
                value = float(peak * (1 - math.exp(-e / 2)) + noise)
                rows.append({"num_layers": layers, "max_units": units, "learning_rate": lr,
                             "seed": seed, "epoch": e, "val_acc": value,
                             "epoch_time_s": 0.1 * layers})
    meta = TableMeta(space={"num_layers": {"choice": [1, 2, 3]},
                            "max_units": {"choice": [64, 256]},
                            "learning_rate": {"loguniform": [1e-5, 1e-1]}},
                     metric="val_acc", mode="max", dataset="generated", backbone="none",
                     command="tests/backends/replay/tables.py")
    return write_table(pd.DataFrame(rows), meta, path)
