"""Iranfar et al. (Iranfar et al.): one tabular Q-learning agent per layer, Q-tables shared by
consecutive agents, as written in its Algorithms 1-3 (plain numpy, no RLlib).

Agent i chooses layer i's action (a tuple of that layer's hyperparameters); its state is
agent i-1's action, so Q-table i, of size N_i x N_{i+1}, belongs to agents i and i+1
(section V-D), zero-initialised. A separate visited mask says which cells were ever updated,
because 0 is also a legitimate learned value; where Algorithms 1 and 2 ask for "a cell equal
to zero" we read "a cell never visited".

- Exploration phase (Algorithm 1): agents 1 and 2 pick an unvisited cell of table 1; agent
  i+1 picks an unvisited cell in table i's row of agent i's action; with none left, a random
  action. It lasts `exploration_episodes` (default: the largest table's size, the paper's
  minimum to visit every cell), with alpha fixed at 0.95.
- Exploration-exploitation phase: with probability epsilon = decay^n (n episodes into the
  phase; 0.99 or 0.98, section VIII-G) a random set, else Algorithm 3 (agents 1 and 2 the
  argmax cell of table 1, then each next agent the argmax of its row). alpha = 0.95 *
  0.999^n (eq. 3; `compound=True` reads it as alpha_old * 0.999^n instead, which is below
  0.01 after 100 episodes).
- Update (Algorithm 2), after each episode's shared reward R: the last table
  Q += alpha R; table i, if table i+1's row of a_{i+1} still has an unvisited cell,
  Q += alpha R (lines 3 and 6 as written; `literal=False` reads them as (1 - alpha) Q +
  alpha R, line 8 without its bootstrap term, which the prose's "updated slightly
  differently ... since there is no Q-table afterward" also allows: as written, repeated
  cells sum their rewards, so Q tracks visit counts), else Q = (1 - alpha) Q + alpha (R +
  gamma max Q_{i+1}[a_{i+1}, .]). Tables are read as they were before the episode. A set
  that repeats an earlier one updates nothing (section VI-C).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.tune.searching import StateSearcher, is_failure
from service.core.api import eq2_reward
from service.core.objectives import OBJECTIVE_COLUMN

ALPHA0 = 0.95
"""Learning rate during exploration and at the start of exploitation (Iranfar et al. VI-B)."""
ALPHA_DECAY = 0.999
"""alpha = 0.95 * 0.999^n in exploitation (Iranfar et al. eq. 3)."""
EPSILON_DECAYS = (0.99, 0.98)
"""epsilon = decay^n (Iranfar et al. VI-C, compared in VIII-G)."""
GAMMA = 0.9
"""Discount from one table to the next (the document gives none)."""


layer_reward = eq2_reward
"""Eq. 2, the agents' shared reward (`service.core.api.eq2_reward`)."""


class LayerwiseQ:
    """The agents' Q-tables, visited masks and phases; `act` proposes one action per layer,
    `update` learns from the episode's reward."""

    def __init__(self, sizes: list[int], *, seed: int = 0, gamma: float = GAMMA,
                 epsilon_decay: float = EPSILON_DECAYS[0],
                 exploration_episodes: int | None = None, compound: bool = False,
                 literal: bool = True) -> None:
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"need at least two layers with actions, got sizes {sizes}")
        self.sizes = list(sizes)
        self.tables = [np.zeros((a, b)) for a, b in zip(sizes, sizes[1:], strict=False)]
        self.visited = [np.zeros((a, b), dtype=bool) for a, b in zip(sizes, sizes[1:],
                                                                     strict=False)]
        self.gamma, self.epsilon_decay, self.compound = gamma, epsilon_decay, compound
        self.literal = literal
        self.exploration_episodes = (max(t.size for t in self.tables)
                                     if exploration_episodes is None else exploration_episodes)
        self.rng = np.random.default_rng(seed)
        self.episodes = 0
        self.alpha = ALPHA0
        self.seen: set[tuple[int, ...]] = set()

    @property
    def exploring(self) -> bool:
        return self.episodes < self.exploration_episodes

    @property
    def exploit_episodes(self) -> int:
        """Episodes already passed in the exploration-exploitation phase."""
        return max(0, self.episodes - self.exploration_episodes)

    @property
    def epsilon(self) -> float:
        return 1.0 if self.exploring else self.epsilon_decay ** self.exploit_episodes

    def _pick(self, mask: np.ndarray) -> Any:
        """A random index among the True cells of `mask`, or None."""
        cells = np.argwhere(mask)
        return None if len(cells) == 0 else tuple(int(v) for v in
                                                  cells[int(self.rng.integers(len(cells)))])

    def explore(self) -> list[int]:
        """Algorithm 1: unvisited cells first, else random actions."""
        first = self._pick(~self.visited[0])
        if first is None:
            first = (int(self.rng.integers(self.sizes[0])), int(self.rng.integers(self.sizes[1])))
        actions = list(first)
        for i in range(1, len(self.tables)):
            nxt = self._pick(~self.visited[i][actions[i]])
            actions.append(int(self.rng.integers(self.sizes[i + 1])) if nxt is None
                           else int(nxt[0]))
        return actions

    def _argmax(self, values: np.ndarray) -> Any:
        """The best cell (index tuple) of `values`, ties broken at random."""
        return self._pick(values == values.max())

    def exploit(self) -> list[int]:
        """Algorithm 3: the argmax cell of table 1, then the argmax of each next row."""
        actions = list(self._argmax(self.tables[0]))
        for i in range(1, len(self.tables)):
            actions.append(int(self._argmax(self.tables[i][actions[i]])[0]))
        return actions

    def greedy(self) -> list[int]:
        """Algorithm 3's set without drawing from the RNG (ties: the first), for logging
        whether the agents have settled on one set (Iranfar et al. Figs 9 and 11)."""
        actions = [int(v) for v in np.unravel_index(int(np.argmax(self.tables[0])),
                                                    self.tables[0].shape)]
        for i in range(1, len(self.tables)):
            actions.append(int(np.argmax(self.tables[i][actions[i]])))
        return actions

    def act(self) -> list[int]:
        """One action per layer for the next episode."""
        if self.exploring:
            return self.explore()
        if self.rng.random() < self.epsilon:
            return [int(self.rng.integers(n)) for n in self.sizes]
        return self.exploit()

    def update(self, actions: list[int], reward: float) -> bool:
        """Algorithm 2 for one finished episode; False when the set repeated an earlier one
        (nothing is learned, the episode still counts)."""
        key = tuple(int(a) for a in actions)
        if len(key) != len(self.sizes):
            raise ValueError(f"need {len(self.sizes)} actions, got {len(key)}")
        if not self.exploring:
            n = self.exploit_episodes
            self.alpha = (self.alpha if self.compound else ALPHA0) * ALPHA_DECAY ** n
        self.episodes += 1
        if key in self.seen:
            return False
        self.seen.add(key)
        before = [t.copy() for t in self.tables]
        visited = [v.copy() for v in self.visited]
        alpha, last = self.alpha, len(self.tables) - 1
        for i, table in enumerate(self.tables):
            cell = (key[i], key[i + 1])
            if i == last or not visited[i + 1][key[i + 1]].all():
                keep = 1.0 if self.literal else 1.0 - alpha
                table[cell] = keep * before[i][cell] + alpha * reward
            else:
                future = before[i + 1][key[i + 1]].max()
                table[cell] = (1 - alpha) * before[i][cell] + alpha * (
                    reward + self.gamma * future)
            self.visited[i][cell] = True
        return True

    def get_state(self) -> dict[str, Any]:
        return {"tables": [t.copy() for t in self.tables],
                "visited": [v.copy() for v in self.visited], "episodes": self.episodes,
                "alpha": self.alpha, "seen": sorted(self.seen),
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.tables = [np.array(t, dtype=float) for t in state["tables"]]
        self.visited = [np.array(v, dtype=bool) for v in state["visited"]]
        self.episodes, self.alpha = int(state["episodes"]), float(state["alpha"])
        self.seen = {tuple(s) for s in state["seen"]}
        self.rng.bit_generator.state = state["rng"]


SIZE_REF_MB = 100.0
"""Eq. 2's S_model is divided by this (our reading): the paper's rewards stay within [-1, 1],
which c_A A_val - c_S S_model with S in MB (VGG-16: 60 MB) cannot; S / 100 MB keeps the
size term on the accuracy's scale."""


def layer_agents(space: Any, points: int) -> list[tuple[str, tuple[Any, ...],
                                                         list[tuple[Any, ...]]]]:
    """Iranfar et al.'s agents over a space: one per layer of the searchable VGG-16 (its
    per-layer dimensions together, in layer order, an action being a tuple of their
    values, section V-B), then one per other searched dimension in the space's order.
    Each is (name, its dimensions, its actions)."""
    from service.core.space import VGG16_LAYERS, layer_of

    groups: dict[str, list[Any]] = {}
    for dim in space.searched:
        groups.setdefault(layer_of(dim.name) or dim.name, []).append(dim)
    order = {layer: i for i, layer in enumerate(VGG16_LAYERS)}
    names = sorted(groups, key=lambda n: (0, order[n]) if n in order else (1, 0))
    return [(n, tuple(groups[n]), list(itertools.product(*(d.grid(points)
                                                         for d in groups[n]))))
            for n in names]


class LayerwiseSearch(StateSearcher):
    """Iranfar et al. as a Tune searcher: one agent per layer (`layer_agents`), one trial
    one episode. Its reward is the trial's `reward` metric where the experiment optimises
    eq. 2 itself, else eq. 2 from the final metric and `model_size_mb`; a failed or
    terminated trial gets -1. With `auto_epochs`, episodes get shorter as in section VI-A:
    the budget starts at the run's epochs (the document: 10) and drops to the earliest
    epoch at which a trial met the loss threshold (`loss_met_epoch`), never below
    `min_epochs` (3); suggestions then carry `epochs`."""

    def __init__(self, space: Any, *, seed: int = 0, points: int = 3,
                 c_acc: float = 1.0, size_ref_mb: float = SIZE_REF_MB,
                 gamma: float = GAMMA, epsilon_decay: float = EPSILON_DECAYS[0],
                 exploration_episodes: int | None = None, compound: bool = False,
                 auto_epochs: bool = False, min_epochs: int = 3, literal: bool = True,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.groups = layer_agents(space, points)
        self.c_acc, self.size_ref_mb = c_acc, size_ref_mb
        self.auto_epochs, self.min_epochs = auto_epochs, min_epochs
        self.episode_epochs: int | None = None
        self.agents = LayerwiseQ([len(actions) for _, _, actions in self.groups], seed=seed,
                                 gamma=gamma, epsilon_decay=epsilon_decay,
                                 exploration_episodes=exploration_episodes,
                                 compound=compound, literal=literal)
        self.pending: dict[str, list[int]] = {}
        self.spent_s: dict[str, float] = {}
        self.log: list[dict[str, Any]] = []

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        began = time.perf_counter()
        config = self._suggest(trial_id)
        self.spent_s[trial_id] = time.perf_counter() - began
        return config

    def _suggest(self, trial_id: str) -> dict[str, Any]:
        actions = self.agents.act()
        for _ in range(10):  # a set already in flight would teach nothing twice
            if actions not in self.pending.values():
                break
            actions = self.agents.act()
        self.pending[trial_id] = actions
        config: dict[str, Any] = {}
        for (_, dims, values), a in zip(self.groups, actions, strict=True):
            config.update({d.name: v for d, v in zip(dims, values[a], strict=True)})
        if self.episode_epochs is not None:
            config["epochs"] = self.episode_epochs
        return config

    def episode_reward(self, result: dict | None, error: bool) -> float:
        """The shared reward of one finished episode (eq. 2, -1 on failure)."""
        if error or is_failure(result, self.metric):
            return -1.0
        value = float(result[self.metric])  # type: ignore[index]
        if self.metric in ("reward", OBJECTIVE_COLUMN):  # already a scalarisation with size
            return value
        acc = -value if self.mode == "min" else value
        size = float((result or {}).get("model_size_mb") or 0.0) / self.size_ref_mb
        return layer_reward(acc, size, self.c_acc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        actions = self.pending.pop(trial_id, None)
        if actions is None:
            return
        began = time.perf_counter()
        exploring = self.agents.exploring
        reward = self.episode_reward(result, error)
        learned = self.agents.update(actions, reward)
        greedy = self.agents.greedy()
        spent = self.spent_s.pop(trial_id, 0.0) + time.perf_counter() - began
        met = int((result or {}).get("loss_met_epoch") or 0)
        if self.auto_epochs and met > 0:
            shorter = max(self.min_epochs, met)
            if self.episode_epochs is None or shorter < self.episode_epochs:
                self.episode_epochs = shorter
        self.log.append({"episode": self.agents.episodes, "trial_id": trial_id,
                         "phase": "exploration" if exploring else "exploitation",
                         "actions": " ".join(map(str, actions)), "reward": reward,
                         "learned": learned, "epsilon": self.agents.epsilon,
                         "alpha": self.agents.alpha, "greedy": " ".join(map(str, greedy)),
                         "episode_epochs": self.episode_epochs,
                         "overhead_ms": 1000.0 * spent})

    def save(self, checkpoint_path: str) -> None:
        """The searcher state, and its episode log as agent_steps.csv beside it (the
        experiment folder): Iranfar et al. Table V's overhead and Fig. 11's convergence."""
        from service.backends.tune.searching import write_log
        from service.core.layout import STEP_LOG

        super().save(checkpoint_path)
        write_log(self.log, Path(checkpoint_path).parent / STEP_LOG)

    def get_state(self) -> dict[str, Any]:
        return {"agents": self.agents.get_state(), "pending": dict(self.pending),
                "log": list(self.log), "episode_epochs": self.episode_epochs,
                "spent_s": dict(self.spent_s)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.agents.set_state(state["agents"])
        self.pending, self.log = dict(state["pending"]), list(state["log"])
        self.episode_epochs = state.get("episode_epochs")
        self.spent_s = dict(state.get("spent_s", {}))
