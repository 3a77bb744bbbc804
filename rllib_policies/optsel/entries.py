"""Registry entries of the RL methods, as data (gathered by `service.core.registry`)."""

from __future__ import annotations

from typing import Any

from service.core.registry import Entry, Option
from service.core.space import HPARAMS, OPTIMIZERS, SearchSpace

_F = "rllib_policies.optsel._factories:"
def _optimizer_set(space: SearchSpace, options: dict[str, Any]) -> str | None:
    """The optimizer set is 2opt, 3opt, or two or more distinct known optimizer names."""
    from rllib_policies.optsel._selector import OPTIMIZER_SETS, parse_optimizers

    names = parse_optimizers(options["optimizers"])
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        return (f"option 'optimizers' {options['optimizers']!r}: give "
                f"{' or '.join(OPTIMIZER_SETS)}, or two or more distinct names of "
                f"{', '.join(OPTIMIZERS)} joined by commas (e.g. sgd,adam)")
    return None


def _rate(name: str, default: float) -> Option:
    return Option(float, default, f"{name}'s own learning rate (Pham 2024 gives none)",
                  low=HPARAMS["lr"].low, high=HPARAMS["lr"].high)


def _optsel_options(optimizers: str) -> dict[str, Option]:
    from rllib_policies.optsel._selector import DEFAULT_LR, RewardWeights

    w = RewardWeights()
    return {
        "optimizers": Option(str, optimizers, "the action set: 2opt (sgd,sam), 3opt "
                             "(sgd,sam,adam) or a comma list"),
        "lr_sgd": _rate("SGD", DEFAULT_LR["sgd"]),
        "lr_sam": _rate("SAM", DEFAULT_LR["sam"]),
        "lr_adam": _rate("Adam", DEFAULT_LR["adam"]),
        "w_acc": Option(float, w.acc, "reward weight of the val_acc gain", low=0.0),
        "w_loss": Option(float, w.loss, "reward weight of the val_loss drop", low=0.0),
        "w_time": Option(float, w.time, "reward cost per epoch second", low=0.0),
        "w_final": Option(float, w.final, "reward weight of the last epoch's val_acc",
                          low=0.0),
        "step_epochs": Option(int, 1, "epochs per decision (Pham 2024: 1)", low=1,
                              high=100_000),
        "patience": Option(int, 10, "early stopping: end a trial after this many epochs "
                           "without a better metric (0: never)", low=0, high=100_000),
    }


ENTRIES: list[Entry] = [
    Entry("optsel-dqn", "Pham 2024: a DQN agent picks the optimizer of every epoch "
          "(SGD vs SAM), each at its own rate", _F + "optsel_dqn",
          {**_optsel_options("2opt"),
           "epsilon_decay": Option(float, 0.995, "epsilon <- max(0.05, decay * epsilon) per "
                                   "decision (Pham 2024 3.2.1.2)", above=0.0, high=1.0),
           "learning_starts": Option(int, 32, "transitions before the first DQN update (Pham "
                                     "2024 gives none)", low=1, high=1_000_000)},
          kind="controller", needs_space=False, check=_optimizer_set, feeds=("table2",)),
    Entry("optsel-ppo", "Pham 2024: a PPO agent picks the optimizer of every epoch "
          "(3opt: SGD / SAM / Adam; 2opt: SGD / SAM), each at its own rate",
          _F + "optsel_ppo", _optsel_options("3opt"),
          kind="controller", needs_space=False, check=_optimizer_set, feeds=("table2",)),
]


