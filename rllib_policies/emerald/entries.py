"""Registry entries of the RL methods, as data (gathered by `service.core.registry`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rllib_policies.emerald._encoding import (
    AUG_FLAGS,
    EPSILON_DECAY,
    WARM_EPSILON_START,
    ActionSet,
    EmeraldSettings,
    agents_label,
)
from service.core.registry import Entry, Option
from service.core.space import SearchSpace

_F = "rllib_policies.emerald._factories:"
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
        from rllib_policies.emerald._warm import WarmStartError, load_agents

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
           # docs/emerald-o.md); emerald-dynamic keeps the combinations (no measurement).
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


