"""RLlib's SAC on Box actions through `MultiAgentLearner` (HYPERA's learner): a 1-D
continuous bandit is learned to within a tolerance, per-agent temperatures are honoured,
critics score actions, and a restored learner acts and updates identically."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_policies.agents import AgentSpec, LearnerSettings, MultiAgentLearner, make_learner

OBS = np.zeros(2, np.float32)
TARGET = 0.4


def sac(seed: int = 0, **agents: AgentSpec) -> MultiAgentLearner:
    settings = LearnerSettings(algo="sac", hidden=(64, 64), lr=1e-3, gamma=0.99,
                               batch_size=64, learning_starts=64, target_tau=0.005,
                               initial_alpha=0.05, seed=seed)
    return make_learner(agents or {"a": AgentSpec(obs_dim=2, action_dim=1)}, settings)


def bandit(learner: MultiAgentLearner, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        decision = learner.act({"a": OBS}, epsilon=0.0, rng=rng)
        a = float(decision["a"].action[0])
        learner.observe({"a": OBS}, decision, -(a - TARGET) ** 2, {"a": OBS})
        learner.update()


@pytest.mark.parametrize("seed", [0, 1])
def test_sac_learns_a_continuous_bandit(seed: int) -> None:
    learner = sac(seed)
    bandit(learner, 300, seed)
    greedy = float(learner.greedy({"a": OBS})["a"][0])
    assert greedy == pytest.approx(TARGET, abs=0.1)
    q1, q2 = learner.q_values("a", OBS, np.array([[TARGET], [-0.9]]))
    assert q1[0] > q1[1] and q2[0] > q2[1]  # the critics rank the target above a far action
    learner.stop()


def test_temperatures_are_per_agent_and_actions_in_the_box() -> None:
    learner = sac(0, a=AgentSpec(obs_dim=2, action_dim=3, temperature=0.5),
                  b=AgentSpec(obs_dim=2, action_dim=1, temperature=0.1))
    assert learner.temperature("a") == pytest.approx(0.5)
    assert learner.temperature("b") == pytest.approx(0.1)
    decisions = learner.act({"a": OBS, "b": OBS}, epsilon=0.0,
                            rng=np.random.default_rng(0))
    assert decisions["a"].action.shape == (3,) and decisions["b"].action.shape == (1,)
    assert np.all(np.abs(decisions["a"].action) <= 1.0)
    with pytest.raises(ValueError, match="action of shape"):
        learner.observe({"a": OBS}, {"a": decisions["b"]}, 0.0, {"a": OBS})
    learner.stop()


def test_restore_gives_identical_actions_updates_and_temperature() -> None:
    learner = sac(0)
    bandit(learner, 80, 0)
    state = learner.get_state()
    twin = sac(5)
    twin.set_state(state)
    assert twin.temperature("a") == pytest.approx(learner.temperature("a"))
    assert learner.temperature("a") != pytest.approx(0.05)  # it has learned
    for one in (learner, twin):
        bandit(one, 5, 9)
    assert np.array_equal(learner.greedy({"a": OBS})["a"], twin.greedy({"a": OBS})["a"])
    assert learner.temperature("a") == twin.temperature("a")
    learner.stop()
    twin.stop()
