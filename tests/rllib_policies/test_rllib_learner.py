"""EMERALD-O's two RLlib agents (DQN, PPO learners; no Algorithm loop): learn, restore, act."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from rllib_policies.agents import (
    AgentSpec,
    Decision,
    LearnerSettings,
    MultiAgentLearner,
    make_learner,
)

OBS_DIM = 4
AGENTS = {"aug": AgentSpec(OBS_DIM, 4), "opt": AgentSpec(OBS_DIM, 6)}
ALGOS = ["dqn", "ppo"]


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """The learner sets torch to 1 thread (its host-process setting); later tests train CNNs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _best(obs: dict[str, np.ndarray]) -> dict[str, int]:
    """The bandit's correct actions: aug depends on its context, opt is always 3."""
    return {"aug": 1 if obs["aug"][0] > 0.5 else 2, "opt": 3}


def _obs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {aid: rng.random(OBS_DIM).astype(np.float32) for aid in AGENTS}


def _train(learner: MultiAgentLearner, rng: np.random.Generator, steps: int) -> None:
    """Contextual bandit, shared reward = number of correct agents + noise, decaying epsilon."""
    for t in range(steps):
        obs = _obs(rng)
        decisions = learner.act(obs, epsilon=max(0.05, 1.0 - t / 180), rng=rng)
        best = _best(obs)
        reward = sum(float(decisions[a].action == best[a]) for a in AGENTS)
        learner.observe(obs, decisions, reward + 0.1 * rng.standard_normal(), obs)
        learner.update()


def _accuracy(learner: MultiAgentLearner, n: int = 400) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    hits = dict.fromkeys(AGENTS, 0)
    for _ in range(n):
        obs = _obs(rng)
        greedy, best = learner.greedy(obs), _best(obs)
        for aid in AGENTS:
            hits[aid] += greedy[aid] == best[aid]
    return {aid: hits[aid] / n for aid in AGENTS}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_contextual_bandit(algo: str, seed: int) -> None:
    # Checked over 24 seeds: greedy accuracy of aug >= 0.88 (DQN) / 0.90 (PPO), opt ~1.0.
    learner = make_learner(AGENTS, LearnerSettings(algo=algo, seed=seed))
    try:
        _train(learner, np.random.default_rng(seed + 100), steps=300)
        acc = _accuracy(learner)
    finally:
        learner.stop()
    assert acc["aug"] >= 0.8 and acc["opt"] >= 0.8, acc


@pytest.mark.parametrize("algo", ALGOS)
def test_state_round_trip_keeps_policy_and_learning(algo: str) -> None:
    settings = LearnerSettings(algo=algo, seed=3, gamma=0.5)
    a = make_learner(AGENTS, settings)
    b = make_learner(AGENTS, settings)
    try:
        _train(a, np.random.default_rng(7), steps=70)  # PPO: 2 updates, 6 steps pending
        # Pickled, as a Tune searcher checkpoint would store it.
        b.set_state(pickle.loads(pickle.dumps(a.get_state())))
        probe = np.random.default_rng(11)
        for _ in range(200):
            obs = _obs(probe)
            assert b.greedy(obs) == a.greedy(obs)
        assert b.num_steps == a.num_steps == 70
        assert b.replay_size == a.replay_size == (70 if algo == "dqn" else 0)
        # Both continue identically: weights, optimizer, replay (and its sampler) restored.
        ra, rb = np.random.default_rng(5), np.random.default_rng(5)
        metrics_a: dict[str, float] = {}
        metrics_b: dict[str, float] = {}
        for _ in range(30):
            for learner, rng, out in ((a, ra, metrics_a), (b, rb, metrics_b)):
                obs, nxt = _obs(rng), _obs(rng)
                decisions = learner.act(obs, epsilon=0.3, rng=rng)
                learner.observe(obs, decisions, {"aug": 1.0, "opt": 0.5}, nxt, terminated=False)
                out.update(learner.update())
        assert metrics_b and set(metrics_b) >= {"aug/loss", "opt/loss"}
        assert metrics_b == pytest.approx(metrics_a)
        for _ in range(50):
            obs = _obs(probe)
            assert b.greedy(obs) == a.greedy(obs)
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(("terminated", "expected_q"), [(True, 1.0), (False, 2.0)])
def test_dqn_bootstraps_only_unterminated_steps(terminated: bool, expected_q: float) -> None:
    # Reward 1 every step, gamma 0.5: Q = 1 for terminal steps, 1 / (1 - 0.5) = 2 for chained ones.
    learner = make_learner(AGENTS, LearnerSettings(algo="dqn", gamma=0.5, seed=4))
    rng = np.random.default_rng(0)
    try:
        for _ in range(250):
            obs, nxt = _obs(rng), _obs(rng)
            decisions = learner.act(obs, epsilon=1.0, rng=rng)
            learner.observe(obs, decisions, 1.0, nxt, terminated=terminated)
            learner.update()
        q = np.concatenate([
            d.extra["q_values"]
            for _ in range(20)
            for d in learner.act(_obs(rng), epsilon=0.0, rng=rng).values()
        ])
        assert np.mean(q) == pytest.approx(expected_q, abs=0.1)
        assert np.max(np.abs(q - expected_q)) < 0.5
    finally:
        learner.stop()


def test_same_seed_same_learner_and_caller_rng_untouched() -> None:
    np.random.seed(2024)
    before = np.random.get_state()[1].copy()
    runs = []
    for _ in range(2):
        learner = make_learner(AGENTS, LearnerSettings(algo="dqn", seed=9))
        _train(learner, np.random.default_rng(1), steps=40)
        probe = np.random.default_rng(2)
        runs.append([learner.greedy(_obs(probe)) for _ in range(50)])
        runs.append(learner.act(_obs(probe), epsilon=0.0, rng=probe)["aug"].extra["q_values"])
        learner.stop()
    assert runs[0] == runs[2]
    np.testing.assert_array_equal(runs[1], runs[3])
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("algo", ALGOS)
def test_act_returns_valid_actions_and_distributions(algo: str) -> None:
    learner = make_learner(AGENTS, LearnerSettings(algo=algo))
    rng = np.random.default_rng(0)
    try:
        for epsilon in (0.0, 0.3, 1.0):
            for _ in range(20):
                obs = _obs(rng)
                decisions = learner.act(obs, epsilon=epsilon, rng=rng)
                greedy = learner.greedy(obs)
                assert set(decisions) == set(AGENTS)
                for aid, d in decisions.items():
                    n = AGENTS[aid].n_actions
                    assert isinstance(d, Decision) and isinstance(d.action, int)
                    assert 0 <= d.action < n and 0 <= greedy[aid] < n
                    assert d.probs.shape == (n,) and np.all(d.probs >= 0)
                    assert d.probs.sum() == pytest.approx(1.0)
                    if algo == "dqn":
                        assert np.argmax(d.extra["q_values"]) == greedy[aid]
                        if epsilon == 0.0:
                            assert d.action == greedy[aid] and d.probs[d.action] == 1.0
                        if epsilon == 1.0:
                            np.testing.assert_allclose(d.probs, 1.0 / n)
                    else:
                        assert np.argmax(d.probs) == greedy[aid]
                        assert float(d.extra["action_logp"]) == pytest.approx(
                            np.log(d.probs[d.action]), abs=1e-5
                        )
                        assert d.extra["action_dist_inputs"].shape == (n,)
        forced = learner.act(_obs(rng), epsilon=1.0, rng=rng, greedy=True)
        assert all(d.probs.max() == pytest.approx(d.probs[d.action]) for d in forced.values())
    finally:
        learner.stop()


def test_restore_before_replay_sampling_started_then_learn() -> None:
    """A learner pickled before its first replay sample (learning_starts not reached) must
    come back able to sample and update: RLlib's buffer set_state alone cannot, and a
    LearnerGroup unpickled whole raises on its first update (metrics tags)."""
    settings = LearnerSettings(algo="dqn", seed=4, learning_starts=8)
    a = make_learner(AGENTS, settings)
    try:
        _train(a, np.random.default_rng(2), steps=3)
        # Pickled whole, as Tune pickles a searcher into tuner.pkl.
        b = pickle.loads(pickle.dumps(a))
        assert b.num_steps == a.num_steps == 3
        rng = np.random.default_rng(9)
        metrics: dict[str, float] = {}
        for _ in range(12):
            obs = _obs(rng)
            decisions = b.act(obs, epsilon=0.5, rng=rng)
            b.observe(obs, decisions, 1.0, obs)
            metrics.update(b.update())
        assert {"aug/loss", "opt/loss"} <= set(metrics)
    finally:
        a.stop()
        b.stop()
