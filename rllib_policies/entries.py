"""Registry entries of the RL methods, as data (gathered by `service.core.registry`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rllib_policies._encoding import (
    AUG_FLAGS,
    EPSILON_DECAY,
    WARM_EPSILON_START,
    ActionSet,
    EmeraldSettings,
    agents_label,
)
from service.core.registry import Entry, Option
from service.core.space import HPARAMS, OPTIMIZERS, SearchSpace

_F = "rllib_policies._factories:"

_EMERALD_OPTIONS = {
    "algo": Option(str, "dqn", "RLlib algorithm: dqn (epsilon-greedy + replay) or ppo",
                   choices=("dqn", "ppo")),
    "combine": Option(str, "weighted", "reward combination (EMERALD-O eq. 6-8, Table 7)",
                      choices=("weighted", "product", "min")),
    "epsilon_decay": Option(float, EPSILON_DECAY, "exploration decay rate (EMERALD-O 5.1.1)",
                            above=0.0, high=100.0),
    "epsilon": Option(str, "budget", "exploration schedule: budget (linear from 1 to 0.05 "
                      "over epsilon_fraction of the decisions the trial budget affords), "
                      "decay (EMERALD-O 5.1.1's exp(-epsilon_decay t)) or adaptive "
                      "(Vashishtha 2025: each decision's decay + lambda Var(Q))",
                      choices=("budget", "decay", "adaptive")),
    "epsilon_fraction": Option(float, 0.5, "budget schedule: the fraction of the budget's "
                               "decisions after which epsilon stays at its end", above=0.0,
                               high=1.0),
    "epsilon_lambda": Option(float, -1.0, "Vashishtha's lambda for epsilon: adaptive "
                             "(< 0: uncertainty slows the decay)", low=-1e6, high=1e6),
    "epsilon_start": Option(float, -1.0, "exploration at the first decision (-1: 1 for fresh "
                            f"agents, {WARM_EPSILON_START:g} warm-started)", low=-1.0,
                            high=1.0),
    "warm_start": Option(str, "", "agents file (emerald-agents.pkl) or folder of an earlier "
                         "EMERALD-O experiment or `pretrain` run: the agents start from its "
                         "weights, with a fresh buffer and exploration ('': fresh agents)"),
    "aug_actions": Option(str, "combinations", "Agent 1's actions: every combination of the "
                          "augmentation dimensions, or table4 (EMERALD-O Table 4: none / flip "
                          "/ rotation / shift, one at a time, rotation at each range > 0)",
                          choices=("combinations", "table4")),
    "lr_head": Option(str, "bins", "Agent 2's rate: bins (log-spaced rates, one discrete "
                      "action with the optimizer) or continuous (section 4.4.2's linear head: "
                      "Agent 2 on SAC, Box of optimizer scores and the log rate)",
                      choices=("bins", "continuous")),
    "w1": Option(float, 0.5, "weight of Agent 1's reward in the weighted sum (eq. 6)",
                 low=0.0, high=100.0),
    "w2": Option(float, 0.5, "weight of Agent 2's reward in the weighted sum (eq. 6)",
                 low=0.0, high=100.0),
    "acc_scale": Option(str, "fraction", "Agent 1's reward unit: fraction (0.02 for 2%) or "
                        "points (Fig 6: +2 for 2%)", choices=("fraction", "points")),
    "low_acc_floor": Option(float, 0.0, "section 4.6.1: validation accuracy (fraction) below "
                            "which a step is penalised", low=0.0, high=1.0),
    "low_acc_penalty": Option(float, 0.0, "section 4.6.1: penalty per unit of accuracy "
                              "below low_acc_floor (0: off)", low=0.0, high=1000.0),
    "variant": Option(str, "", "paper: the paper's own settings wherever an option is at "
                      "its default (table4 actions, decay schedule, reward in points, "
                      "low-accuracy penalty, early stopping); '': this project's defaults",
                      choices=("", "paper")),
}

def _emerald_checks(space: SearchSpace, options: dict[str, Any]) -> str | None:
    """Each of the two agents has something to choose (EMERALD-O section 3); epsilon_decay
    and epsilon_lambda belong to their schedules: set with another one they would be ignored
    silently."""
    actions = ActionSet.from_space(space, aug_actions=options["aug_actions"])
    if len(actions.aug) < 2:
        return ("EMERALD-O's augmentation agent needs a searched augmentation dimension "
                f"({', '.join(AUG_FLAGS)}); the space has none: add one, or use another "
                "searcher")
    if len(actions.opt) < 2:
        return ("EMERALD-O's optimizer agent needs a searched optimizer or learning rate; "
                "the space has neither: add one, or use another searcher")
    if options["epsilon_start"] != -1.0 and options["epsilon_start"] < 0:
        return (f"option 'epsilon_start': {options['epsilon_start']:g} is no probability; "
                "give a value in [0, 1], or -1 (the default: 1 fresh, "
                f"{WARM_EPSILON_START:g} warm-started)")
    if options["epsilon"] != "decay" and options["epsilon"] != "adaptive" and \
            options["epsilon_decay"] != EPSILON_DECAY:
        return (f"option 'epsilon_decay' applies to the decay and adaptive schedules, not "
                f"epsilon: {options['epsilon']}; add epsilon: decay")
    if options["epsilon"] != "adaptive" and options["epsilon_lambda"] != -1.0:
        return ("option 'epsilon_lambda' applies to epsilon: adaptive only; add "
                "epsilon: adaptive")
    if options["warm_start"]:
        from rllib_policies._warm import WarmStartError, load_agents

        try:
            load_agents(options["warm_start"], actions,
                        algo=agents_label(options["algo"], options["lr_head"]),
                        hidden=EmeraldSettings().hidden)
        except WarmStartError as err:
            return str(err)
    return None


ENTRIES: list[Entry] = [
    Entry("emerald", "EMERALD-O: two RLlib agents as a Tune searcher, one step per trial",
          _F + "emerald",
          {**_EMERALD_OPTIONS,
           # Table 4's actions won on the replay tables at 30 trials and tied at 12 (issue 13;
           # README "EMERALD-O"); emerald-dynamic keeps the combinations (no measurement).
           "aug_actions": dataclasses.replace(_EMERALD_OPTIONS["aug_actions"], default="table4"),
           "early_stopping": Option(bool, True, "stop underperformers (EMERALD-O 5.1.2); "
                                    "the epochs they leave go to more trials")},
          table9_row="EMERALD-O (Proposed)", check=_emerald_checks, replay_s=1.8,
          feeds=("fig7",)),
    Entry("emerald-dynamic", "EMERALD-O inside running trials: new settings every k epochs",
          _F + "emerald_dynamic",
          {**_EMERALD_OPTIONS,
           "step_epochs": Option(int, 1, "epochs per step (the paper: 50)", low=1,
                                 high=100_000),
           "early_stopping": Option(bool, False, "EMERALD-O 5.1.2 inside trials: a trial "
                                    "that has not improved for `patience` epochs ends (a "
                                    "penalty step); its epochs go to more trials"),
           "patience": Option(int, 3, "early_stopping: epochs without improvement", low=1,
                              high=100_000)},
          kind="controller", check=_emerald_checks, replay_s=7.6, feeds=("fig7",)),
]


def _optimizer_set(space: SearchSpace, options: dict[str, Any]) -> str | None:
    """The optimizer set is 2opt, 3opt, or two or more distinct known optimizer names."""
    from rllib_policies._optsel import OPTIMIZER_SETS, parse_optimizers

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
    from rllib_policies._optsel import DEFAULT_LR, RewardWeights

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


ENTRIES += [
    Entry("optsel-dqn", "Pham 2024: a DQN agent picks the optimizer of every epoch "
          "(SGD vs SAM), each at its own rate", _F + "optsel_dqn",
          {**_optsel_options("2opt"),
           "epsilon_decay": Option(float, 0.995, "epsilon <- max(0.05, decay * epsilon) per "
                                   "decision (Pham 2024 3.2.1.2)", above=0.0, high=1.0),
           "learning_starts": Option(int, 32, "transitions before the first DQN update (the "
                                     "document gives none)", low=1, high=1_000_000)},
          kind="controller", needs_space=False, check=_optimizer_set, feeds=("table2",)),
    Entry("optsel-ppo", "Pham 2024: a PPO agent picks the optimizer of every epoch "
          "(3opt: SGD / SAM / Adam; 2opt: SGD / SAM), each at its own rate",
          _F + "optsel_ppo", _optsel_options("3opt"),
          kind="controller", needs_space=False, check=_optimizer_set, feeds=("table2",)),
]


def _epsilon_range(space: SearchSpace, options: dict[str, Any]) -> str | None:
    if options["eps_min"] > options["eps_max"]:
        return (f"option 'eps_min' {options['eps_min']:g} is above 'eps_max' "
                f"{options['eps_max']:g}; give eps_min <= eps_max")
    return None


def _adaptive_q_options() -> dict[str, Option]:
    from rllib_policies import _qlearning as aq

    return {
        "points": Option(int, 5, "values per continuous range of the grid", low=2,
                         high=1000),
        "alpha": Option(float, aq.ALPHA, "Q-learning rate", above=0.0, high=1.0),
        "gamma": Option(float, aq.GAMMA, "discount between steps of the walk", low=0.0,
                        high=0.999),
        "k0": Option(float, aq.K0, "base epsilon decay per decision (Vashishtha 2025)",
                     low=0.0, high=100.0),
        "lam": Option(float, aq.LAMBDA, "decay per unit of Var(Q(s, .)); < 0: uncertainty "
                      "slows the decay (the document's prose), > 0 speeds it (its formula)",
                      low=-1e6, high=1e6),
        "eps_max": Option(float, aq.EPS_MAX, "initial exploration rate", low=0.0, high=1.0),
        "eps_min": Option(float, aq.EPS_MIN, "final exploration rate", low=0.0, high=1.0),
    }


ENTRIES += [
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
           "gamma": Option(float, 0.9, "discount from one Q-table to the next (the document "
                           "gives none)", low=0.0, high=1.0),
           "epsilon_decay": Option(float, 0.99, "epsilon = decay^n after exploration "
                                   "(Iranfar et al.: 0.99 or 0.98)", above=0.0, high=1.0),
           "exploration_episodes": Option(int, 0, "episodes of Algorithm 1 (0: the largest "
                                          "Q-table's size, the document's minimum)", low=0,
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


def _hypera_options() -> dict[str, Option]:
    from rllib_policies import _hypera_core as h
    from rllib_policies._hypera_core import CONFLICT_RULES, STRATEGIES

    s = h.HyperaSettings()
    groups = "architecture, optimization, regularization, data, loss"
    return {
        "strategy": Option(str, s.strategy, "coordination (HYPERA): independent (union "
                           "of the proposals), sequential (each agent acts on the previous "
                           "one's result, in the document's agent order) or cooperative (the "
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
                                  "update (the document gives none)", low=1,
                                  high=1_000_000),
        "updates_per_step": Option(int, s.updates_per_step, "SAC updates per closed "
                                   "decision", low=1, high=1000),
        "groups": Option(str, "", "which agent manages which name, for names outside the "
                         "catalogue (a table's num_layers, max_units...): 'optimization="
                         "learning_rate,momentum;architecture=num_layers'; empty: the "
                         f"catalogue's ({groups})"),
    }


def _hypera_space(space: SearchSpace, options: dict[str, Any]) -> str | None:
    from rllib_policies._hypera_core import (
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


ENTRIES += [
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
