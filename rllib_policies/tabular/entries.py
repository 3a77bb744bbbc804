"""Registry entries of the RL methods, as data (gathered by `service.core.registry`)."""

from __future__ import annotations

from typing import Any

from service.core.registry import Entry, Option
from service.core.space import SearchSpace

_F = "rllib_policies.tabular._factories:"
def _epsilon_range(space: SearchSpace, options: dict[str, Any]) -> str | None:
    if options["eps_min"] > options["eps_max"]:
        return (f"option 'eps_min' {options['eps_min']:g} is above 'eps_max' "
                f"{options['eps_max']:g}; give eps_min <= eps_max")
    return None


def _adaptive_q_options() -> dict[str, Option]:
    from rllib_policies.tabular import _qlearning as aq

    return {
        "points": Option(int, 5, "values per continuous range of the grid", low=2,
                         high=1000),
        "alpha": Option(float, aq.ALPHA, "Q-learning rate", above=0.0, high=1.0),
        "gamma": Option(float, aq.GAMMA, "discount between steps of the walk", low=0.0,
                        high=0.999),
        "k0": Option(float, aq.K0, "base epsilon decay per decision (Vashishtha 2025)",
                     low=0.0, high=100.0),
        "lam": Option(float, aq.LAMBDA, "decay per unit of Var(Q(s, .)); < 0: uncertainty "
                      "slows the decay (Vashishtha's prose), > 0 speeds it (the formula)",
                      low=-1e6, high=1e6),
        "eps_max": Option(float, aq.EPS_MAX, "initial exploration rate", low=0.0, high=1.0),
        "eps_min": Option(float, aq.EPS_MIN, "final exploration rate", low=0.0, high=1.0),
    }


ENTRIES: list[Entry] = [
    Entry("adaptive-q", "Vashishtha 2025: tabular Q-learning walk over the grid, epsilon "
          "adapting to Var(Q)", _F + "adaptive_q", _adaptive_q_options(),
          check=_epsilon_range),
]


def _two_agents(space: SearchSpace, options: dict[str, Any]) -> str | None:
    from service.core.space import layer_of

    if len({layer_of(d.name) or d.name for d in space.searched}) < 2:
        return ("needs at least two agents: searched dimensions of two layers (or two "
                "hyperparameters), Q-tables being shared by consecutive agents")
    return None


ENTRIES += [
    Entry("layerwise", "Iranfar et al.: one tabular Q-learning agent per layer (or dimension), "
          "Q-tables shared by consecutive agents", _F + "layerwise",
          {"points": Option(int, 3, "values per continuous range (each agent's actions)",
                            low=2, high=1000),
           "c_acc": Option(float, 1.0, "eq. 2's c_A (c_S = 1 - c_A weighs model size)",
                           low=0.0, high=1.0),
           "size_ref_mb": Option(float, 100.0, "eq. 2's model size is divided by this",
                                 above=0.0),
           "gamma": Option(float, 0.9, "discount from one Q-table to the next (Iranfar et "
                           "al. give none)", low=0.0, high=1.0),
           "epsilon_decay": Option(float, 0.99, "epsilon = decay^n after exploration "
                                   "(Iranfar et al.: 0.99 or 0.98)", above=0.0, high=1.0),
           "exploration_episodes": Option(int, 0, "episodes of Algorithm 1 (0: the largest "
                                          "Q-table's size, Iranfar et al.'s minimum)", low=0,
                                          high=1_000_000),
           "compound_alpha": Option(bool, False, "read eq. 3 as alpha_old x 0.999^n "
                                    "(default: 0.95 x 0.999^n)"),
           "auto_epochs": Option(bool, False, "shorten episodes to the earliest epoch a "
                                 "trial met termination.loss (Iranfar et al. VI-A); the "
                                 "search then runs episodes until the budget's total epochs "
                                 "are spent"),
           "min_epochs": Option(int, 3, "auto_epochs never goes below this (Iranfar et al.: "
                                "3)", low=1, high=100_000),
           "update": Option(str, "literal", "Algorithm 2 lines 3 and 6: literal (Q += alpha "
                            "R, as written) or terminal ((1 - alpha) Q + alpha R)",
                            choices=("literal", "terminal"))},
          check=_two_agents, feeds=("table5",)),
]


