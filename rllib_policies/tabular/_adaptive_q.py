"""Vashishtha 2025: tabular Q-learning over the configuration grid with an exploration rate
that adapts to the spread of the Q-values, as a Tune searcher (`adaptive-q`).

The state is a grid point of the space (continuous ranges at `points` values, log-spaced on
log ranges); an action moves one hyperparameter one step up or down, or stays; the reward is
the evaluated configuration's final metric (val_acc; the negative for a metric to minimise);
Q(s, a) += alpha [r + gamma max_a' Q(s', a') - Q(s, a)] (Vashishtha 2025 3.2). The walk
continues from the configuration just proposed, so with several trials in flight each
proposal starts where the previous one went (pending steps are updated when their result
arrives). A step onto a configuration already evaluated (a seeded run repeats exactly) is
learned from its known result at once instead of spending a trial on it; a trial is spent
on the first new configuration, or after `MAX_KNOWN_STEPS` known ones.

Epsilon (Vashishtha 2025 3.3): eps_min + (eps_max - eps_min) exp(-K_t), with K_t the sum over
decisions of k_i = max(0, k0 + lambda Var(Q(s_i, .))). The document's formula writes
exp(-k t) with a k that moves, which is not monotone; the cumulative form is, and it equals
exp(-k t) when k is constant. Its prose says high variance (uncertainty) should slow the
decay while its formula with lambda > 0 speeds it up: lambda may have either sign, and the
default (-1) follows the prose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rllib_policies.tabular._qlearning import (
    ALPHA,
    EPS_MAX,
    EPS_MIN,
    GAMMA,
    K0,
    LAMBDA,
    MAX_KNOWN_STEPS,
    adaptive_epsilon,
    decay_step,
)
from service.backends.tune.searching import StateSearcher, is_failure
from service.core.space import SearchSpace


class AdaptiveQSearch(StateSearcher):
    """Vashishtha's agent: a Q-table over grid points, actions that step one dimension."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, points: int = 5,
                 alpha: float = ALPHA, gamma: float = GAMMA, k0: float = K0,
                 lam: float = LAMBDA, eps_max: float = EPS_MAX, eps_min: float = EPS_MIN,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dims = space.searched
        self.values = [tuple(d.grid(points)) for d in self.dims]
        self.n_actions = 2 * len(self.dims) + 1  # up / down per dimension, then stay
        self.alpha, self.gamma, self.k0, self.lam = alpha, gamma, k0, lam
        self.eps_max, self.eps_min = eps_max, eps_min
        self.rng = np.random.default_rng(seed)
        self.q: dict[tuple[int, ...], np.ndarray] = {}
        self.state = tuple(int(self.rng.integers(len(v))) for v in self.values)
        self.cumulative_k = 0.0
        self.decisions = 0
        self.pending: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}
        self.known: dict[tuple[int, ...], float] = {}  # evaluated grid points: their reward
        self.log: list[dict[str, Any]] = []

    # The table.

    def row(self, state: tuple[int, ...]) -> np.ndarray:
        """Q(s, .), zero for a state never seen."""
        if state not in self.q:
            self.q[state] = np.zeros(self.n_actions)
        return self.q[state]

    def move(self, state: tuple[int, ...], action: int) -> tuple[int, ...]:
        """The grid point after `action`; a step past an edge stays put."""
        if action == self.n_actions - 1:
            return state
        dim, step = divmod(action, 2)
        out = list(state)
        out[dim] = min(len(self.values[dim]) - 1, max(0, out[dim] + (1 if step == 0 else -1)))
        return tuple(out)

    def config(self, state: tuple[int, ...]) -> dict[str, Any]:
        return {d.name: self.values[i][state[i]] for i, d in enumerate(self.dims)}

    @property
    def epsilon(self) -> float:
        return adaptive_epsilon(self.cumulative_k, self.eps_max, self.eps_min)

    def update(self, state: tuple[int, ...], action: int, reward: float,
               after: tuple[int, ...]) -> float:
        """One Q-learning update; returns the TD error."""
        q = self.row(state)
        target = reward + self.gamma * float(self.row(after).max())
        error = target - q[action]
        q[action] += self.alpha * error
        return float(error)

    # Tune's side.

    def _step(self) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
        """One epsilon-greedy decision from the current state (the state moves on)."""
        q = self.row(self.state)
        if self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.n_actions))
        else:  # ties broken at random, so an all-zero row does not always pick "up"
            best = np.flatnonzero(q == q.max())
            action = int(self.rng.choice(best))
        self.cumulative_k += decay_step(q, self.k0, self.lam)
        self.decisions += 1
        step = (self.state, action, self.move(self.state, action))
        self.state = step[2]
        return step

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        step = self._step()
        for _ in range(MAX_KNOWN_STEPS):
            if step[2] not in self.known:
                break
            self.update(*step[:2], self.known[step[2]], step[2])
            step = self._step()
        self.pending[trial_id] = step
        return self.config(step[2])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        step = self.pending.pop(trial_id, None)
        if step is None:
            return
        ok = not error and not is_failure(result, self.metric)
        value = result[self.metric] if ok else None  # type: ignore[index]
        sign = 1.0 if self.mode != "min" else -1.0
        # A failed configuration earns the worst reward seen so far (0 before any).
        worst = min((r["reward"] for r in self.log if not r["failed"]), default=0.0)
        reward = sign * float(value) if ok else worst
        self.known[step[2]] = reward
        td = self.update(step[0], step[1], reward, step[2])
        self.log.append({"trial_id": trial_id, "reward": reward, "failed": not ok,
                         "td_error": td, "epsilon": self.epsilon})

    def get_state(self) -> dict[str, Any]:
        return {"q": {k: v.copy() for k, v in self.q.items()}, "state": self.state,
                "cumulative_k": self.cumulative_k, "decisions": self.decisions,
                "pending": dict(self.pending), "known": dict(self.known),
                "log": list(self.log),
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.q = {tuple(k): np.array(v) for k, v in state["q"].items()}
        self.state = tuple(state["state"])
        self.cumulative_k, self.decisions = state["cumulative_k"], state["decisions"]
        self.pending, self.log = dict(state["pending"]), list(state["log"])
        self.known = dict(state["known"])
        self.rng.bit_generator.state = state["rng"]
