"""Registry entries of the RL methods, as data (gathered by `service.core.registry`)."""

from __future__ import annotations

from typing import Any

from service.core.registry import Entry, Option
from service.core.space import SearchSpace

_F = "rllib_policies.hypera._factories:"
def _hypera_options() -> dict[str, Option]:
    from rllib_policies.hypera import _core as h
    from rllib_policies.hypera._core import CONFLICT_RULES, STRATEGIES

    s = h.HyperaSettings()
    groups = "architecture, optimization, regularization, data, loss"
    return {
        "strategy": Option(str, s.strategy, "coordination: independent (union "
                           "of the proposals), sequential (each agent acts on the previous "
                           "one's result, in the HYPERA note's agent order) or cooperative (the "
                           "candidate combination with the highest sum of critic values)",
                           choices=STRATEGIES),
        "conflict": Option(str, s.conflict, "a hyperparameter two agents move (weight decay, "
                           "label smoothing): value (higher critic wins), specialisation "
                           "(weighted mean, the specialist counting twice) or thompson",
                           choices=CONFLICT_RULES),
        "scales": Option(str, h.DEFAULT_SCALES, f"action scale per agent ({groups}): the "
                         "largest move per decision, as a fraction of the normalised range"),
        "temperatures": Option(str, h.DEFAULT_TEMPERATURES, "SAC's initial temperature per "
                               "agent (HYPERA's exploration temperatures)"),
        "every": Option(str, h.DEFAULT_EVERY, "epochs between an agent's decisions in a "
                        "trial (the architecture agent: at the next trial start)"),
        "candidates": Option(int, s.candidates, "cooperative: joint candidates scored",
                             low=1, high=1000),
        "random_starts": Option(int, s.random_starts, "trials started from a random point "
                                "before the incumbent seeds every trial (at most a quarter "
                                "of the trial budget)", low=1, high=100_000),
        "reward_scale": Option(float, s.reward_scale, "reward per unit of validation "
                               "accuracy gained (100: points)", above=0.0, high=1e6),
        "lr": Option(float, s.lr, "SAC's actor, critic and temperature learning rate "
                     "(HYPERA: 3e-4)", above=0.0, high=1.0),
        "batch_size": Option(int, s.batch_size, "SAC batch (HYPERA: 256)", low=1,
                             high=1_000_000),
        "replay_capacity": Option(int, s.replay_capacity, "replay buffer (HYPERA: "
                                  "1e6; smaller on CPU)", low=1, high=10_000_000),
        "learning_starts": Option(int, s.learning_starts, "decisions before SAC's first "
                                  "update (the HYPERA note gives none)", low=1,
                                  high=1_000_000),
        "updates_per_step": Option(int, s.updates_per_step, "SAC updates per closed "
                                   "decision", low=1, high=1000),
        "groups": Option(str, "", "which agent manages which name, for names outside the "
                         "catalogue (a table's num_layers, max_units...): 'optimization="
                         "learning_rate,momentum;architecture=num_layers'; empty: the "
                         f"catalogue's ({groups})"),
    }


def _hypera_space(space: SearchSpace, options: dict[str, Any]) -> str | None:
    from rllib_policies.hypera._core import (
        GROUPS,
        agent_configs,
        groups_of,
        parse_groups,
        ungrouped,
    )

    try:
        groups = parse_groups(options["groups"])
    except ValueError as err:
        return str(err)
    loose = ungrouped(space, groups)
    if loose:
        return (f"HYPERA's agents manage {', '.join(GROUPS)} hyperparameters; "
                f"{', '.join(loose)} belong to none: give the option groups (e.g. "
                f"'optimization={loose[0]}'), make them constants or use another searcher")
    if not groups_of(space, groups):
        return "HYPERA needs at least one searched hyperparameter of its groups"
    try:
        agent_configs(options["scales"], options["temperatures"], options["every"])
    except ValueError as err:
        return str(err)
    return None


ENTRIES: list[Entry] = [
    Entry("hypera", "HYPERA: five SAC agents (architecture, optimization, "
          "regularization, data, loss) move their groups inside running trials; the "
          "architecture agent seeds the next trial", _F + "hypera",
          {**_hypera_options(),
           "step_epochs": Option(int, 1, "epochs between the controller's steps (each "
                                 "agent acts on its own every N of them)", low=1,
                                 high=100_000)},
          kind="controller", check=_hypera_space),
    Entry("hypera-search", "HYPERA's agents as a searcher: each trial is the "
          "incumbent plus every agent's delta", _F + "hypera_search", _hypera_options(),
          check=_hypera_space),
]
