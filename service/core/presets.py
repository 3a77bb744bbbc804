"""Named experiment presets: configurations as data, merged under a YAML file and flags."""

from __future__ import annotations

import copy
from typing import Any

from service.core.api import ConfigError, did_you_mean
from service.core.space import TABLE_III_VGG16, layer_space

EVERY_ENTRY: tuple[str, ...] = (
    "emerald", "emerald-dynamic", "optuna", "hyperopt", "skopt", "ax", "spearmint",
    "hyperband", "grid", "random", "bohb", "asha", "pbt", "pb2", "trivialaugment")
"""The entries the Table 9 presets compare, in EMERALD-O Table 9's order then the others:
every entry but Pham's (`fixed`, `optsel-*`), which have their own presets."""

SHIPPED_TABLES: tuple[str, ...] = (
    "docs/tables/digits-vgg16_w0.0625.parquet", "docs/tables/digits-resnet18_w0.0625.parquet",
    "docs/tables/digits-vgg16.parquet")
OPTSEL_TABLE = "docs/tables/digits-resnet18_w0.0625-optsel.parquet"
"""Replay table (c): Pham's optimizers at three rates (record-optsel)."""
"""The recorded tables in the repository (docs/tables/README.md says how each was made)."""


OPTSEL_METHODS: dict[str, dict[str, Any]] = {
    "fixed:sgd": {"optimizer": "sgd"}, "fixed:sam": {"optimizer": "sam"},
    "fixed:adam": {"optimizer": "adam"}, "optsel-dqn": {},
    "optsel-ppo:2opt": {"optimizers": "2opt"}, "optsel-ppo:3opt": {"optimizers": "3opt"}}
"""Pham 2024 Table 2's rows: the three fixed optimizers, DQN (SGD vs SAM), PPO 2-opt and
3-opt, with their options."""

OPTSEL_SPACE: dict[str, Any] = {"batch_size": 64, "momentum": 0.9, "weight_decay": 0.0005}
"""Pham's constants: weight decay 5e-4 (3.2.2.3); momentum and batch size are ours
(it gives none). Each optimizer runs at its own rate (service.core.space.OPTIMIZER_LR)."""


def optsel_preset(name: str, dataset: dict[str, Any], backbone: str, epochs: int,
                  seeds: int, gpu: bool) -> dict[str, Any]:
    """Table 2 of Pham 2024: one training run per method and seed (the agent learns
    within the run, as in the document), with early stopping after 10 epochs without a
    better val_acc; the final test scores the best checkpoint's schedule."""
    return {
        "name": name, "dataset": dataset, "backbones": [backbone],
        "searchers": list(OPTSEL_METHODS), "searcher_options": copy.deepcopy(OPTSEL_METHODS),
        "space": dict(OPTSEL_SPACE), "budget": {"trials": 1, "epochs": epochs},
        "concurrency": 1, "seeds": list(range(seeds)),
        "resources": {"cpus": 4, "gpus": 1} if gpu else {"cpus": 1},
    }


LAYERWISE_CPU_LAYERS: tuple[str, ...] = ("conv1", "conv3", "conv5", "conv8", "conv11", "dense")
"""The CPU preset's agents: the first convolution of each of VGG-16's five blocks and the
dense layer (the other layers keep the original's values)."""
LAYERWISE_CPU_SETS: dict[str, tuple[int, ...]] = {"filters": (32, 64, 128, 256),
                                                  "units": (128, 512, 2048)}
"""Table III's VGG-16 filters (without 16, which width 0.125 would round up to 4 like 32)
and three of its dense sizes; kernels, strides and pools stay the original's."""


def layerwise_preset(name: str, *, dataset: dict[str, Any], backbone: str,
                     space: dict[str, Any], trials: int, epochs: int, seeds: int,
                     termination: dict[str, Any], size_ref_mb: float,
                     layerwise: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """Table V of Iranfar et al.: the layer-wise agents against random search at the same
    number of episodes, both optimising eq. 2 (`metric: reward`) under the same early
    termination, and the original network (`fixed:original`, no layer set)."""
    return {
        "name": name, "dataset": dataset, "backbones": [backbone],
        "searchers": ["layerwise", "random", "fixed:original"],
        "searcher_options": {"layerwise": layerwise,
                             "fixed:original": {"optimizer": space["optimizer"],
                                                "lr": space["lr"], "patience": 0}},
        "space": space, "metric": "reward",
        "reward": {"c_acc": 0.5, "size_ref_mb": size_ref_mb},
        "termination": termination, "budget": {"trials": trials, "epochs": epochs},
        "concurrency": 1, "seeds": list(range(seeds)),
        "resources": {"cpus": 4, "gpus": 1} if gpu else {"cpus": 1},
    }


HYPERA_PAPER: dict[str, Any] = {"scales": "0.1,0.05,0.2,0.15,0.05", "random_starts": 1}
# (rllib_policies.hypera._core.DOCUMENT_SCALES; not imported: presets load without RLlib)
"""HYPERA's own action scales, and one random start before the incumbent seeds every
trial: the `:paper` variant of the HYPERA entries (their defaults won on the replay
tables)."""


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


TABLE_A_LRS = (1e-05, 3.16228e-05, 0.0001, 0.000316228, 0.001, 0.00316228, 0.01, 0.0316228,
               0.1)
"""The 9 learning rates table (a) recorded (record-emerald's lr, 9 log points)."""
AGREEMENT_ENTRIES = ("random", "optuna", "asha", "emerald", "emerald-dynamic", "pbt")
AGREEMENT_SEEDS = 10


def agreement_preset(name: str, table: str, *, replay: bool) -> dict[str, Any]:
    """One side of the agreement study: 12 trials x 12 epochs, 10 seeds, two slots, on the
    exact recording settings of table (a) (EMERALD-O's space, its 9 recorded rates as
    choices, vgg16@0.0625, digits at 16 px) or of table (c) (Pham's optimizers,
    resnet18@0.0625) for optsel-ppo: run for real (`replay=False`) or replayed on the table
    with the same space, slots and budget."""
    if table == "a":
        record, searchers = PRESETS["record-emerald"], list(AGREEMENT_ENTRIES)
        space = {**record["space"], "lr": list(TABLE_A_LRS)}
        backbone, tables, options = "vgg16@0.0625", [SHIPPED_TABLES[0]], {
            "pbt": {"population": 12}}
    else:
        record, searchers = PRESETS["record-optsel"], ["optsel-ppo"]
        space = {**record["space"], "lr": [0.001, 0.01, 0.1]}
        backbone, tables, options = "resnet18@0.0625", [OPTSEL_TABLE], {}
    common = {"name": name, "searchers": searchers, "searcher_options": options,
              "budget": {"trials": 12, "epochs": 12}, "concurrency": 2,
              "seeds": list(range(AGREEMENT_SEEDS))}
    if replay:
        return {**common, "backend": "replay", "replay": {"tables": tables}}
    return {**common, "dataset": dict(record["dataset"]), "backbones": [backbone],
            "space": space, "resources": {"cpus": 1}}


PRETRAINED_AGENTS = {t: t.replace("docs/tables/", "docs/agents/emerald-").replace(
    ".parquet", ".pkl") for t in SHIPPED_TABLES[:2]}
"""EMERALD-O's agents pretrained on each table (a), 50 episodes of 12 trials x 12 epochs:
`python -m service pretrain --table <table> --episodes 50 --out <file>`."""


def warm_preset(name: str, test_table: str, trials: int = 12) -> dict[str, Any]:
    """Transfer, honestly: EMERALD-O started from agents pretrained on the *other* table (a)
    (another backbone), against fresh EMERALD-O and the baselines on `test_table`, 20 seeds,
    equal epochs."""
    (source,) = [t for t in PRETRAINED_AGENTS if t != test_table]
    warm = {"warm_start": PRETRAINED_AGENTS[source]}
    return {
        "name": name, "backend": "replay", "replay": {
            "tables": [test_table],
            "paired": ["emerald:warm vs random", "emerald:warm vs optuna",
                       "emerald:warm vs emerald", "emerald:warm vs emerald:warm-explore"]},
        "searchers": ["emerald", "emerald:warm", "emerald:warm-explore", "optuna",
                      "hyperopt", "random", "asha"],
        # warm-explore: the same weights with a full exploration schedule (from 1)
        "searcher_options": {"emerald:warm": warm,
                             "emerald:warm-explore": {**warm, "epsilon_start": 1.0}},
        "budget": {"trials": trials, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    }


EMERALD_VARIANTS: dict[str, dict[str, Any]] = {
    "emerald:paper": {"variant": "paper"},
    "emerald:combinations": {"aug_actions": "combinations"},
    "emerald:continuous": {"lr_head": "continuous"},
    "emerald:points": {"acc_scale": "points", "low_acc_floor": 0.5, "low_acc_penalty": 1.0},
    "emerald:decay": {"epsilon": "decay"},
    "emerald:adaptive": {"epsilon": "adaptive"},
    "emerald:no-stop": {"early_stopping": False},
    "emerald-dynamic:stop": {"early_stopping": True},
    "emerald-dynamic:paper": {"variant": "paper"},
}
"""Issue 13's variants: the paper's settings one at a time and all together (variant:
paper), in both modes."""


def emerald_replay_preset(name: str, trials: int, searchers: list[str] | None = None
                          ) -> dict[str, Any]:
    """EMERALD-O's variants against Optuna, HyperOpt, random search and ASHA (random search
    under the same early stopping) on the two tables (a), 20 seeds, `trials` x 12 epochs,
    equal epochs."""
    searchers = searchers or ["emerald", *[k for k in EMERALD_VARIANTS if "dynamic" not in k],
                              "emerald-dynamic", "emerald-dynamic:stop",
                              "emerald-dynamic:paper", "optuna", "hyperopt", "random", "asha"]
    pairs = ["emerald vs random", "emerald vs optuna", "emerald vs asha",
             "emerald vs emerald:combinations", "emerald vs emerald:decay",
             "emerald vs emerald:paper"]
    return {
        "name": name, "backend": "replay",
        "replay": {"tables": list(SHIPPED_TABLES[:2]),
                   "paired": [p for p in pairs if p.split(" vs ")[1] in searchers]},
        "searchers": searchers,
        "searcher_options": {k: v for k, v in EMERALD_VARIANTS.items() if k in searchers},
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
    # Accuracy against model size in a small real run (issue 34): VGG-16 at three widths and
    # four learning rates on digits at 16 px, Optuna's NSGA-II and MOTPE beside random
    # search, Optuna TPE and ASHA on ParEGO's scalarisation; 2 seeds of 8 trials x 3 epochs.
    "pareto-cpu": {
        "name": "pareto-cpu",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["vgg16"],
        "space": {"width": [0.0625, 0.15625, 0.25], "optimizer": "adam",
                  "lr": [1e-4, 1e-3, 1e-2, 1e-1]},
        "objectives": [{"metric": "val_acc", "mode": "max"},
                       {"metric": "model_size_mb", "mode": "min", "bounds": [0.0, 4.0]}],
        "reference": [0.0, 4.0], "scalarisation": {"kind": "parego"},
        "searchers": ["optuna-nsga2", "optuna-motpe", "random", "optuna", "asha"],
        "budget": {"trials": 8, "epochs": 3},
        "concurrency": 1,
        "seeds": [0, 1],
        "resources": {"cpus": 1},
    },
    # Trials of about 30 s on 2 CPU cores (VGG-16 at width 0.25 on digits at 32 px, 12
    # epochs): where the time goes when trials are long (issue: time goes into training).
    "cpu-30s": {
        "name": "cpu-30s",
        "dataset": {"name": "digits", "image_size": 32},
        "backbones": ["vgg16@0.25"],
        "searchers": ["random", "optuna"],
        "budget": {"trials": 10, "epochs": 12},
        "concurrency": 1,
        "seeds": [0],
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
        "searcher_options": {"emerald:weighted": {"combine": "weighted", "epsilon": "decay",
                                             "epsilon_decay": 0.3},
                             "emerald:product": {"combine": "product", "epsilon": "decay",
                                             "epsilon_decay": 0.3},
                             "emerald:min": {"combine": "min", "epsilon": "decay",
                                             "epsilon_decay": 0.3}},
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
    # learning rate) for the methods of Iranfar et al. and Vashishtha 2025.
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
    # Replay table (c): Pham's per-epoch decision, SGD / SAM / Adam at three rates
    # (each optimizer's own rate among them), its constants, 3 seeds of 12 epochs.
    "record-optsel": {
        "name": "record-optsel",
        "dataset": {"name": "digits", "image_size": 16},
        "backbones": ["resnet18@0.0625"],
        "space": {**OPTSEL_SPACE, "optimizer": ["sgd", "sam", "adam"],
                  "lr": {"loguniform": [0.001, 0.1]}},
        "record": {"points_per": {"lr": 3}, "out": "docs/tables", "tag": "optsel"},
        "budget": {"trials": 1, "epochs": 12},
        "concurrency": 2,
        "seeds": [0, 1, 2],
        "resources": {"cpus": 1},
    },
    # Pham 2024 Table 2 on the CPU: bundled digits, ResNet-18 width-scaled, 5 seeds.
    "optsel-cpu": optsel_preset("optsel-cpu", {"name": "digits", "image_size": 16},
                                "resnet18@0.125", epochs=20, seeds=5, gpu=False),
    # Pham's full setting on a GPU cluster: ResNet-18 with the ImageNet stem, 100
    # epochs (Table 2's runs converge after up to 82), CIFAR-10 and Fashion-MNIST.
    "optsel-gpu-cifar10": optsel_preset(
        "optsel-gpu-cifar10", {"name": "cifar10", "root": "data/cifar10"},
        "resnet18_imagenet", epochs=100, seeds=5, gpu=True),
    "optsel-gpu-fashion": optsel_preset(
        "optsel-gpu-fashion", {"name": "fashion_mnist", "root": "data/fashion_mnist"},
        "resnet18_imagenet", epochs=100, seeds=5, gpu=True),
    # Table (c) replayed: Pham's methods beside the baselines that can search its
    # space, 20 seeds of 10 trials x 12 epochs. A fixed optimizer repeats its config for the
    # same total epochs (each trial replays a drawn recorded seed).
    "replay-optsel": {
        "name": "replay-optsel", "backend": "replay", "replay": {"tables": [OPTSEL_TABLE]},
        "searchers": [*OPTSEL_METHODS, "random", "grid", "optuna", "hyperopt", "skopt",
                      "asha", "hyperband", "pbt"],
        "searcher_options": {
            **{k: ({**v, "repeats": 10} if k.startswith("fixed") else v)
               for k, v in OPTSEL_METHODS.items()},
            "pbt": {"population": 10}},
        "budget": {"trials": 10, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    },
    # Iranfar et al.'s and Vashishtha's tabular Q-learning against the baselines issue 11 names, on
    # the shipped tables (a) and (b), 20 seeds of 20 trials x 12 epochs; layerwise with
    # Algorithm 2 as written and in its terminal reading.
    # Accuracy against model size (issue 34) on table (b), the shipped table that searches
    # the width (its sizes added by service.backends.replay.extend): Optuna's native
    # multi-objective samplers beside single-objective entries on ParEGO's scalarisation,
    # 20 seeds of 20 trials x 12 epochs; hypervolume to (0 val_acc, 4 MB).
    "replay-pareto": {
        "name": "replay-pareto", "backend": "replay",
        "replay": {"tables": [SHIPPED_TABLES[2]]},
        "objectives": [{"metric": "val_acc", "mode": "max"},
                       {"metric": "model_size_mb", "mode": "min", "bounds": [0.0, 4.0]}],
        "reference": [0.0, 4.0], "scalarisation": {"kind": "parego"},
        "searchers": ["optuna-nsga2", "optuna-motpe", "random", "optuna", "hyperopt",
                      "skopt", "asha", "hyperband", "adaptive-q", "layerwise"],
        "budget": {"trials": 20, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    },
    "replay-qlearning": {
        "name": "replay-qlearning", "backend": "replay",
        "replay": {"tables": list(SHIPPED_TABLES)},
        "searchers": ["layerwise", "layerwise:terminal", "adaptive-q", "random", "grid",
                      "optuna", "hyperopt"],
        "searcher_options": {"layerwise:terminal": {"update": "terminal"}},
        "budget": {"trials": 20, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    },
    # HYPERA replayed on the shipped tables against the baselines its issue
    # names: its two entries with our defaults and with the document's settings
    # (`:paper`), Optuna and scikit-optimize (the Bayesian optimisers of its claim),
    # HyperOpt, random, PBT and EMERALD-O; 20 seeds of 20 trials x 12 epochs.
    "replay-hypera": {
        "name": "replay-hypera", "backend": "replay",
        "replay": {"tables": list(SHIPPED_TABLES), "paired": [
            f"{a} vs {b}" for a in ("hypera", "hypera-search")
            for b in ("random", "optuna", "skopt", "hypera:paper")]},
        "searchers": ["hypera", "hypera:paper", "hypera-search", "hypera-search:paper",
                      "optuna", "skopt", "hyperopt", "random", "pbt", "emerald",
                      "emerald-dynamic"],
        "searcher_options": {"hypera:paper": HYPERA_PAPER, "hypera-search:paper": HYPERA_PAPER,
                             "pbt": {"population": 20}},
        "budget": {"trials": 20, "epochs": 12}, "concurrency": 1,
        "seeds": list(range(20)),
    },
    # Issue 13: EMERALD-O's exploration schedules and equal epoch budgets on the two shipped
    # tables with augmentation dimensions (a), against Optuna, HyperOpt, random and ASHA; 20
    # seeds of 12 trials x 12 epochs (`--trials 30`, `--trials 100` for the longer budgets).
    # Warm start across backbones: agents pretrained on the VGG table, tested on the
    # ResNet table, and the other way round (`--trials 30` for 30 trials).
    "replay-warm-resnet": warm_preset("replay-warm-resnet", SHIPPED_TABLES[1]),
    "replay-warm-vgg": warm_preset("replay-warm-vgg", SHIPPED_TABLES[0]),
    # The committed comparisons (docs/results/replay-emerald*): the default, the other
    # action set, the paper's settings and schedules against the baselines. Every variant
    # at 12 trials: replay-emerald-variants (about 20 min on 2 cores).
    "replay-emerald": emerald_replay_preset("replay-emerald", 12, [
        "emerald", "emerald:combinations", "emerald:paper", "emerald:decay", "emerald:adaptive",
        "emerald-dynamic", "optuna", "hyperopt", "random", "asha"]),
    "replay-emerald-variants": emerald_replay_preset("replay-emerald-variants", 12),
    "replay-emerald-30": emerald_replay_preset("replay-emerald-30", 30, [
        "emerald", "emerald:combinations", "emerald:paper", "emerald:decay", "optuna",
        "hyperopt", "random", "asha"]),
    # 100 trials: the default against the baselines. The variants' learners cost minutes
    # per cell at this length (emerald-dynamic's decisions each epoch about 70 s per cell:
    # 45 min for its 40 cells on 2 cores).
    "replay-emerald-100": emerald_replay_preset(
        "replay-emerald-100", 100, ["emerald", "optuna", "hyperopt", "random", "asha"]),
    # Iranfar et al. Table V on the CPU: bundled digits at 16 px, VGG-16 at width 0.125 (1 MB
    # where the original has 57 MB; the size reference shrinks with it), six agents, 5
    # seeds, 320 epochs per search: random search 40 trials of 8 epochs, the agents as many
    # episodes as their shortened ones afford. Adam at 1e-3, batch 64 are ours (Table II's
    # SGD at batch 128 barely moves in a few epochs on 1,079 images).
    "layerwise-cpu": layerwise_preset(
        "layerwise-cpu", dataset={"name": "digits", "image_size": 16},
        backbone="vgg16_layers@0.125",
        space={**layer_space(LAYERWISE_CPU_SETS, LAYERWISE_CPU_LAYERS), "optimizer": "adam",
               "lr": 0.001, "batch_size": 64},
        trials=40, epochs=8, seeds=5, size_ref_mb=1.0,
        termination={"loss": 1.0, "loss_patience": 4, "restarts": 1, "batch_time_s": 0.5,
                     "batch_patience": 5},
        layerwise={"auto_epochs": True, "epsilon_decay": 0.98}, gpu=False),
    # Iranfar et al. Table V at the paper's scale: VGG-16 on CIFAR-100, all 19 layers over
    # Table III's sets (conv 5 x 2 x 2 = 20 actions: the largest table has 400 cells; the
    # paper explores 500 episodes), Table II's SGD at batch 128, augmentation as section
    # VII (rotation, shift, flip), episodes of at most 10 epochs found automatically, the
    # same 8,000 epochs per search (random search: 800 episodes of 10).
    "layerwise-gpu-cifar100": layerwise_preset(
        "layerwise-gpu-cifar100", dataset={"name": "cifar100", "root": "data/cifar100"},
        backbone="vgg16_layers",
        space={**layer_space(TABLE_III_VGG16), "optimizer": "sgd", "lr": 0.01,
               "momentum": 0.9, "batch_size": 128, "flip": True, "rotation": 10,
               "shift": True},
        trials=800, epochs=10, seeds=5, size_ref_mb=100.0,
        termination={"loss": 3.0, "loss_patience": 3, "restarts": 1, "batch_time_s": 0.5,
                     "batch_patience": 20},
        layerwise={"auto_epochs": True, "exploration_episodes": 500}, gpu=True),
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
        # Every Table 9 row: the proposed method in both modes, the seven tools, random
        # search ("Additional Tools").
        "searchers": ["emerald", "emerald-dynamic", "optuna", "hyperopt", "skopt", "ax",
                      "spearmint", "hyperband", "grid", "random"],
        "budget": {"trials": 20, "epochs": 30},
        "concurrency": 4,
        "seeds": [0, 1, 2],
        "resources": {"cpus": 4, "gpus": 1},
    },
}

# The agreement study (docs/results/agreement/): the same cells run for real on table (a)'s
# and table (c)'s recording settings, and replayed on those tables.
PRESETS.update({name: agreement_preset(name, table, replay=name.endswith("-replay"))
                for name, table in (("agreement-real", "a"), ("agreement-replay", "a"),
                                    ("agreement-optsel-real", "c"),
                                    ("agreement-optsel-replay", "c"))})


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset `name`; unknown names fail with a suggestion."""
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}{did_you_mean(name, PRESETS)}; "
                          f"available: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
