"""Named experiment presets: configurations as data, merged under a YAML file and flags."""

from __future__ import annotations

import copy
from typing import Any

from service.api import ConfigError, did_you_mean

EVERY_ENTRY: tuple[str, ...] = (
    "emerald", "emerald-dynamic", "optuna", "hyperopt", "skopt", "ax", "spearmint",
    "hyperband", "grid", "random", "bohb", "asha", "pbt", "pb2", "trivialaugment")
"""Every registry entry, in EMERALD-O Table 9's order then the others."""

SHIPPED_TABLES: tuple[str, ...] = (
    "docs/tables/digits-vgg16_w0.0625.parquet", "docs/tables/digits-resnet18_w0.0625.parquet",
    "docs/tables/digits-vgg16.parquet")
"""The recorded tables in the repository (docs/tables/README.md says how each was made)."""


def replay_preset(name: str, tables: tuple[str, ...], trials: int) -> dict[str, Any]:
    """Every entry replayed over 20 seeds, `trials` x 12 epochs (the tables' length). PBT
    and PB2 get a population of `trials`, so each member trains the 12 recorded epochs and
    the population holds the same total epochs."""
    return {
        "name": name, "backend": "replay", "replay": {"tables": list(tables)},
        "searchers": list(EVERY_ENTRY),
        "searcher_options": {"pbt": {"population": trials}, "pb2": {"population": trials}},
        "budget": {"trials": trials, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    }


PRESETS: dict[str, dict[str, Any]] = {
    # The README's main job: a side-by-side comparison that finishes on a 2-core CPU in
    # well under 15 minutes (bundled digits, width-scaled VGG16 and ResNet-18).
    "cpu-small": {
        "name": "cpu-small",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16@0.125", "resnet18@0.125"],
        "searchers": ["random", "grid", "optuna", "hyperopt", "skopt", "hyperband"],
        "budget": {"trials": 6, "epochs": 3},
        "concurrency": 1,
        "seeds": [0, 1],
        "resources": {"cpus": 1},
    },
    # EMERALD-O Table 9 on the CPU: every registry entry, both EMERALD-O modes, 3 seeds.
    "table9-cpu": {
        "name": "table9-cpu",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16@0.0625", "resnet18@0.0625"],
        "searchers": list(EVERY_ENTRY),
        "budget": {"trials": 5, "epochs": 2},
        "concurrency": 1,
        "seeds": [0, 1, 2],
        "resources": {"cpus": 1},
    },
    # EMERALD-O Table 7: the three reward combinations (eq. 6-8), as labelled variants.
    "table7-cpu": {
        "name": "table7-cpu",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16@0.125", "resnet18@0.125"],
        "searchers": ["emerald:weighted", "emerald:product", "emerald:min"],
        # With 8 trials the paper's decay 0.01 leaves epsilon at 0.93: the three variants
        # then make the same (random) choices (measured: identical tables). 0.3 reaches
        # epsilon 0.1 by the 8th trial so the rewards can matter.
        "searcher_options": {"emerald:weighted": {"combine": "weighted", "epsilon_decay": 0.3},
                             "emerald:product": {"combine": "product", "epsilon_decay": 0.3},
                             "emerald:min": {"combine": "min", "epsilon_decay": 0.3}},
        "budget": {"trials": 8, "epochs": 3},
        "concurrency": 1,
        "seeds": [0, 1, 2],
        "resources": {"cpus": 1},
    },
    # Replay table (a): EMERALD-O's space (flip, rotation, shift, optimizer, learning rate
    # at 9 log points; zoom fixed, rotation at two of Figs 10-12's values to keep the grid
    # at 216 points) on two width-scaled backbones, 2 seeds, 12 epochs.
    "record-emerald": {
        "name": "record-emerald",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16@0.0625", "resnet18@0.0625"],
        "space": {"flip": [False, True], "rotation": [0, 20], "shift": [False, True],
                  "zoom": False, "optimizer": ["adam", "sgd", "rmsprop"],
                  "lr": {"loguniform": [1e-5, 1e-1]}},
        "record": {"points_per": {"lr": 9}, "out": "docs/tables"},
        "budget": {"trials": 1, "epochs": 12},
        "concurrency": 2,
        "seeds": [0, 1],
        "resources": {"cpus": 1},
    },
    # Replay table (b): architecture and regularisation (width, batch size, weight decay,
    # learning rate) for the methods of documents 001-003.
    "record-arch": {
        "name": "record-arch",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16"],
        "space": {"width": {"uniform": [0.0625, 0.25]}, "batch_size": {"int": [32, 128]},
                  "weight_decay": {"uniform": [0.0, 0.001]},
                  "lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": "adam"},
        "record": {"points": 3, "points_per": {"lr": 4}, "out": "docs/tables"},
        "budget": {"trials": 1, "epochs": 12},
        "concurrency": 2,
        "seeds": [0, 1],
        "resources": {"cpus": 1},
    },
    # Every registry entry replayed on the shipped tables: 20 seeds of 20 trials of 12
    # epochs each, on a simulated clock (record-emerald and record-arch made the tables).
    "replay": replay_preset("replay", SHIPPED_TABLES, trials=20),
    # The README main job's trustworthy part: every entry replayed over 20 seeds on one
    # shipped table, beside the small real run (cpu-small), in minutes.
    "replay-demo": replay_preset("replay-demo", SHIPPED_TABLES[:1], trials=10),
    # A tiny run for smoke tests and CI: seconds, not minutes.
    "smoke": {
        "name": "smoke",
        "dataset": {"name": "synthetic", "max_train": 200},
        "backbones": ["resnet18@0.0625"],
        "searchers": ["random"],
        "budget": {"trials": 2, "epochs": 1},
        "concurrency": 2,
        "seeds": [0],
    },
    # EMERALD-O Table 9 shape on CIFAR-10 at full width, for a GPU cluster.
    "table9-gpu": {
        "name": "table9",
        "dataset": {"name": "cifar10", "root": "data/cifar10"},
        "backbones": ["efficientnetv2_b0", "vgg19", "vgg16"],
        "searchers": ["optuna", "hyperopt", "skopt", "ax", "spearmint", "hyperband", "grid"],
        "budget": {"trials": 20, "epochs": 30},
        "concurrency": 4,
        "seeds": [0, 1, 2],
        "resources": {"cpus": 4, "gpus": 1},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset `name`; unknown names fail with a suggestion."""
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}{did_you_mean(name, PRESETS)}; "
                          f"available: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
