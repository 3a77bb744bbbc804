"""Vashishtha's adaptive-epsilon Q-learning searcher: the epsilon schedule in both readings,
moves on the grid, the exact update, pending trials, failures, save/restore, and learning
that concentrates the proposals on the best configuration. Without Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rllib_policies.tabular._adaptive_q import AdaptiveQSearch
from rllib_policies.tabular._qlearning import adaptive_epsilon, decay_step
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({"lr": {"loguniform": [1e-4, 1e-0]},
                               "rotation": {"int": [0, 40]},
                               "optimizer": ["adam", "sgd", "rmsprop"]})


def make(seed: int = 0, **kw) -> AdaptiveQSearch:
    return AdaptiveQSearch(SPACE, seed=seed, metric="val_acc", mode="max", **kw)


def test_epsilon_is_cumulative_monotone_and_either_sign() -> None:
    assert adaptive_epsilon(0.0) == pytest.approx(1.0)
    # constant k: the document's exp(-k t) exactly
    k, t = 0.1, 7
    assert adaptive_epsilon(k * t) == pytest.approx(0.05 + 0.95 * math.exp(-k * t))
    assert adaptive_epsilon(1e9) == pytest.approx(0.05)
    spread, flat = np.array([0.0, 1.0, 0.0, 1.0]), np.zeros(4)
    assert np.var(spread) == pytest.approx(0.25)
    # lambda < 0 (the prose): uncertainty slows the decay; > 0 (the formula) speeds it
    assert decay_step(spread, 0.1, -0.2) == pytest.approx(0.05)
    assert decay_step(spread, 0.1, 0.2) == pytest.approx(0.15)
    assert decay_step(flat, 0.1, -0.2) == decay_step(flat, 0.1, 0.2) == pytest.approx(0.1)
    assert decay_step(spread, 0.1, -10.0) == 0.0  # never negative: epsilon never rises
    s = make(k0=0.1, lam=-1.0)
    seen = []
    for i in range(30):
        s.suggest(f"t{i}")
        seen.append(s.epsilon)
        s.on_trial_complete(f"t{i}", {"val_acc": float(i % 3)})
    assert all(b <= a for a, b in zip(seen, seen[1:], strict=False))


def test_moves_step_one_dimension_and_stay_inside_the_grid() -> None:
    s = make()
    assert s.n_actions == 7 and [len(v) for v in s.values] == [5, 5, 3]
    assert s.move((0, 0, 0), 0) == (1, 0, 0)  # lr up
    assert s.move((0, 0, 0), 1) == (0, 0, 0)  # lr down at the edge: stays
    assert s.move((4, 4, 2), 2) == (4, 4, 2)  # rotation up at the edge
    assert s.move((4, 4, 2), 5) == (4, 4, 1)  # optimizer down
    assert s.move((2, 2, 1), 6) == (2, 2, 1)  # stay
    assert s.config((0, 4, 1)) == {"lr": 1e-4, "rotation": 40, "optimizer": "sgd"}


def test_the_update_is_q_learning_exactly() -> None:
    s = make(alpha=0.5, gamma=0.9)
    s.q[(1, 1, 1)] = np.array([0, 0, 0, 0, 0, 2.0, 0])
    td = s.update((0, 0, 0), 3, 0.8, (1, 1, 1))
    assert td == pytest.approx(0.8 + 0.9 * 2.0)
    assert s.q[(0, 0, 0)][3] == pytest.approx(0.5 * (0.8 + 1.8))
    td = s.update((0, 0, 0), 3, 0.8, (1, 1, 1))
    assert s.q[(0, 0, 0)][3] == pytest.approx(1.3 + 0.5 * (2.6 - 1.3))


def test_pending_trials_failures_and_a_metric_to_minimise() -> None:
    s = make(seed=1)
    a, b = s.suggest("a"), s.suggest("b")  # two in flight: the walk goes on from a
    first, second = s.pending["a"], s.pending["b"]
    assert first[2] == second[0] and s.config(first[2]) == a and s.config(second[2]) == b
    s.on_trial_complete("b", {"val_acc": 0.7})
    s.on_trial_complete("a", None, error=True)
    assert s.log[-1]["failed"] and s.log[-1]["reward"] == 0.7  # the worst seen so far
    assert not s.pending
    s.on_trial_complete("unknown", {"val_acc": 1.0})  # ignored
    low = AdaptiveQSearch(SPACE, seed=0, metric="val_loss", mode="min")
    low.suggest("x")
    low.on_trial_complete("x", {"val_loss": 0.25})
    assert low.log[-1]["reward"] == -0.25


def test_restore_continues_identically(tmp_path) -> None:
    s = make(seed=4)
    for i in range(6):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", {"val_acc": 0.1 * i})
    s.suggest("open")  # pending across the save
    path = str(tmp_path / "q.pkl")
    s.save(path)
    twin = make(seed=99)
    twin.restore(path)
    for who in (s, twin):
        who.on_trial_complete("open", {"val_acc": 0.5})
    assert [s.suggest(f"n{i}") for i in range(5)] == [twin.suggest(f"n{i}") for i in range(5)]


CHAIN = SearchSpace.from_dict({"lr": {"loguniform": [1e-4, 1.0]}, "optimizer": ["adam", "sgd"]})


def _chain(config: dict) -> float:
    """Rises with lr and is higher for sgd: the best grid point is (lr 1, sgd)."""
    return 0.5 + 0.025 * math.log10(config["lr"]) + (0.1 if config["optimizer"] == "sgd" else 0)


def _top_share(seed: int, **kw) -> int:
    """How many of the last 10 of 30 proposals are the best grid point."""
    s = AdaptiveQSearch(CHAIN, seed=seed, metric="val_acc", mode="max", **kw)
    proposals = []
    for i in range(30):
        config = s.suggest(f"t{i}")
        proposals.append(config)
        s.on_trial_complete(f"t{i}", {"val_acc": _chain(config)})
    return sum(p == {"lr": 1.0, "optimizer": "sgd"} for p in proposals[-10:])


def test_learning_concentrates_proposals_on_the_best_configuration() -> None:
    """Against its own ablation without learning (epsilon held at 1: a random walk), the
    Q-learning walk proposes the best grid point far more often once it has learned: a
    one-sided Mann-Whitney U test over 30 seeds at p < 0.001 (seeded, so fixed)."""
    learned = [_top_share(seed) for seed in range(30)]
    walk = [_top_share(seed, eps_min=1.0, eps_max=1.0) for seed in range(30)]
    test = stats.mannwhitneyu(learned, walk, alternative="greater")
    assert np.mean(learned) > 3 * np.mean(walk) and test.pvalue < 1e-3, (learned, walk)


def test_emerald_agents_offer_the_adaptive_schedule() -> None:
    """`epsilon: adaptive` on EMERALD-O's agents: with lambda 0 it is EMERALD-O's own decay
    exactly; with a large negative lambda the Q-values' spread holds epsilon at its start."""
    from rllib_policies.emerald._encoding import EmeraldSettings
    from rllib_policies.emerald._steps import AgentSteps
    from service.core.space import default_space

    space = default_space()

    def schedule(**options) -> list[float]:
        agents = AgentSteps(space, EmeraldSettings.from_options(**options), seed=0,
                            gamma=0.0)
        out = []
        for i in range(5):
            agents.open(f"t{i}", agents.initial_state())
            out.append(agents.epsilon)
        return out

    plain = schedule(epsilon_decay=0.3)
    assert plain == pytest.approx(schedule(epsilon_decay=0.3, epsilon="adaptive",
                                           epsilon_lambda=0.0))
    held = schedule(epsilon_decay=0.3, epsilon="adaptive", epsilon_lambda=-1e6)
    assert held == pytest.approx([1.0] * 5) and plain[-1] < 0.3
