"""Registry entries of the RL methods, as data (gathered by `service.registry`)."""

from __future__ import annotations

from rllib_policies._encoding import EPSILON_DECAY
from service.registry import Entry, Option

_F = "rllib_policies._factories:"

_EMERALD_OPTIONS = {
    "algo": Option(str, "dqn", "RLlib algorithm: dqn (epsilon-greedy + replay) or ppo",
                   choices=("dqn", "ppo")),
    "combine": Option(str, "weighted", "reward combination (EMERALD-O eq. 6-8, Table 7)",
                      choices=("weighted", "product", "min")),
    "epsilon_decay": Option(float, EPSILON_DECAY, "exploration decay rate (EMERALD-O 5.1.1)",
                            above=0.0, high=100.0),
}

ENTRIES: list[Entry] = [
    Entry("emerald", "EMERALD-O: two RLlib agents as a Tune searcher, one step per trial",
          _F + "emerald",
          {**_EMERALD_OPTIONS,
           "early_stopping": Option(bool, True, "stop underperformers (EMERALD-O 5.1.2)")},
          table9_row="EMERALD-O (Proposed)"),
    Entry("emerald-dynamic", "EMERALD-O inside running trials: new settings every k epochs",
          _F + "emerald_dynamic",
          {**_EMERALD_OPTIONS,
           "step_epochs": Option(int, 1, "epochs per step (the paper: 50)", low=1,
                                 high=100_000)},
          kind="controller"),
]
