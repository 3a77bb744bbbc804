"""Pham's optimizer selection: the reward's terms, the state's layout, multi-step
episodes, learning on a seeded problem, and restore mid-trial. Without Ray."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from rllib_policies.optsel._selector import (
    FAIL_REWARD,
    LOSS_SCALE,
    OptimizerSelector,
    RewardWeights,
    epoch_reward,
    state_vector,
)
from service.core.api import Observation
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({"batch_size": 32})
ROW = {"val_acc": 0.5, "val_loss": 1.0, "grad_norm": 2.0, "epoch_time_s": 10.0,
       "diverged": False}


def test_each_reward_term_moves_the_reward_the_right_way() -> None:
    w = RewardWeights(acc=1.0, loss=0.5, time=0.01, final=2.0)
    base = epoch_reward(ROW, ROW, w)
    assert base == pytest.approx(-0.01 * 10.0)  # no change: only the time cost
    better_acc = epoch_reward(ROW, {**ROW, "val_acc": 0.6}, w)
    assert better_acc - base == pytest.approx(0.1)
    lower_loss = epoch_reward(ROW, {**ROW, "val_loss": 0.8}, w)
    assert lower_loss - base == pytest.approx(0.5 * 0.2)
    slower = epoch_reward(ROW, {**ROW, "epoch_time_s": 20.0}, w)
    assert slower < base and base - slower == pytest.approx(0.1)
    assert epoch_reward(ROW, ROW, w, seconds=0.0) == pytest.approx(0.0)
    final = epoch_reward(ROW, ROW, w, last=True)
    assert final - base == pytest.approx(2.0 * 0.5)
    # The first step is measured against accuracy 0 and no loss change.
    assert epoch_reward(None, ROW, w, seconds=0.0) == pytest.approx(0.5)
    for broken in ({**ROW, "diverged": True}, {**ROW, "val_acc": math.nan}, {}):
        assert epoch_reward(ROW, broken, w) == FAIL_REWARD
    worst = epoch_reward(ROW, {**ROW, "val_acc": 0.0, "val_loss": 3.0}, RewardWeights())
    assert FAIL_REWARD < worst


def test_state_vector_layout() -> None:
    prev = {**ROW, "val_acc": 0.4, "val_loss": 1.5}
    s = state_vector(ROW, prev, epoch=3, max_epochs=12, prev_action=2, n_actions=3)
    assert s.shape == (8,)  # Pham 2024: 8 numbers for three optimizers
    assert s.tolist() == pytest.approx([0.5, 1.0 / LOSS_SCALE, 0.1, 0.5, 0.25, 0, 0, 1])
    first = state_vector(None, None, epoch=0, max_epochs=12, prev_action=None, n_actions=2)
    assert first.tolist() == [0.0] * 7
    dqn = state_vector(ROW, prev, epoch=3, max_epochs=12, prev_action=0, n_actions=2,
                       grad_norm=True)
    assert dqn.shape == (8,) and dqn[-1] == pytest.approx(math.log10(3.0))
    assert np.isfinite(state_vector({**ROW, "val_loss": math.inf}, None, epoch=1,
                                    max_epochs=2, prev_action=0, n_actions=2)).all()


# A cheap seeded problem: for the first 3 epochs every optimizer gains the same; after that
# only "adam" keeps gaining accuracy, the others lose a little.
EPOCHS, SWITCH, GOOD = 10, 3, "adam"


def fake_row(epoch: int, optimizer: str, acc: float, rng: np.random.Generator
             ) -> dict[str, Any]:
    gain = 0.05 if epoch <= SWITCH else (0.04 if optimizer == GOOD else -0.01)
    acc = min(1.0, acc + gain + rng.normal(0, 0.003))
    return {"val_acc": acc, "val_loss": 2.0 * (1 - acc), "grad_norm": 1.0,
            "epoch_time_s": 1.0, "diverged": False}


def run_episode(agent: OptimizerSelector, trial: str, rng: np.random.Generator,
                epochs: int = EPOCHS) -> list[str]:
    rows: list[dict[str, Any]] = []
    acc, chosen = 0.1, []
    for epoch in range(epochs):
        answer = agent.decide(Observation(trial, epoch, EPOCHS, {}, rows[-1:]))
        chosen.append(answer["optimizer"])
        rows.append(fake_row(epoch + 1, answer["optimizer"], acc, rng))
        acc = rows[-1]["val_acc"]
        agent.learn()
    if epochs == EPOCHS:
        agent.finish(Observation(trial, EPOCHS, EPOCHS, {}, rows[-1:]))
        agent.learn()
    return chosen


def greedy_schedule(agent: OptimizerSelector, rng: np.random.Generator) -> list[str]:
    """The agent's argmax choice every epoch of a fresh episode (no learning)."""
    from rllib_policies.optsel._selector import _Trial

    trial, acc, picks = _Trial(), 0.1, []
    for epoch in range(EPOCHS):
        state = agent._state(trial, epoch=epoch, max_epochs=EPOCHS)
        name = agent.greedy(state)
        picks.append(name)
        row = fake_row(epoch + 1, name, acc, rng)
        trial.prev, trial.last, acc = trial.last, row, row["val_acc"]
        trial.prev_action = agent.optimizers.index(name)
    return picks


def test_ppo_learns_to_pick_the_optimizer_that_is_better_later() -> None:
    """After 60 episodes, the greedy schedules of 3 seeded agents pick the good optimizer in
    the epochs after the switch far more often than chance (1/3): a one-sided binomial test
    at p < 1e-4 over all those epochs (seeded, so the outcome is fixed)."""
    hits = total = 0
    for seed in range(3):
        agent = OptimizerSelector(SPACE, seed=seed, algo="ppo", optimizers="3opt")
        rng = np.random.default_rng(seed)
        for episode in range(60):
            run_episode(agent, f"s{seed}e{episode}", rng)
        picks = greedy_schedule(agent, np.random.default_rng(100 + seed))[SWITCH:]
        hits += sum(p == GOOD for p in picks)
        total += len(picks)
    test = stats.binomtest(hits, total, 1 / 3, alternative="greater")
    assert hits / total >= 0.7 and test.pvalue < 1e-4, (hits, total, test.pvalue)


def test_a_trial_is_one_multi_step_episode_for_ppo() -> None:
    agent = OptimizerSelector(SPACE, seed=0, algo="ppo", optimizers="2opt")
    rng = np.random.default_rng(0)
    run_episode(agent, "a", rng, epochs=3)  # 2 closed steps, the third in flight
    chains = agent.learner._chains()
    assert [len(c) for c in chains] == [2]
    assert [s.terminated for s in chains[0]] == [False, False]
    np.testing.assert_array_equal(chains[0][0].next_obs["opt"], chains[0][1].obs["opt"])
    for epoch in (3, 4):
        agent.decide(Observation("a", epoch, EPOCHS, {}, [fake_row(epoch, "sgd", 0.3, rng)]))
        agent.learn()
    # The fourth closed step fills the rollout (K = 4): one PPO update over the chain.
    assert agent.learner._pending == [] and agent.log[-1].get("learner_opt/loss") is not None
    agent.finish(Observation("a", 5, EPOCHS, {}, [fake_row(5, "sgd", 0.3, rng)]))
    assert agent.learner._pending[-1].terminated
    agent.learn()  # an ended episode is learned from at once
    assert agent.learner._pending == []


def test_restore_mid_trial_continues_the_identical_schedule() -> None:
    for algo in ("ppo", "dqn"):
        agent = OptimizerSelector(SPACE, seed=3, algo=algo, optimizers="3opt")
        rng = np.random.default_rng(3)
        for episode in range(3):
            run_episode(agent, f"e{episode}", rng)
        rows: list[dict[str, Any]] = []
        acc = 0.1
        for epoch in range(4):  # the trial stops mid-way: save here
            answer = agent.decide(Observation("mid", epoch, EPOCHS, {}, rows[-1:]))
            rows.append(fake_row(epoch + 1, answer["optimizer"], acc, rng))
            acc = rows[-1]["val_acc"]
            agent.learn()
        saved = agent.get_state()
        twin = OptimizerSelector(SPACE, seed=99, algo=algo, optimizers="3opt")
        twin.set_state(saved)
        future = [np.random.default_rng(7), np.random.default_rng(7)]
        schedules = []
        for who, r in zip((agent, twin), future, strict=True):
            got, their_rows, their_acc = [], list(rows), acc
            for epoch in range(4, EPOCHS):
                answer = who.decide(Observation("mid", epoch, EPOCHS, {}, their_rows[-1:]))
                got.append(answer["optimizer"])
                their_rows.append(fake_row(epoch + 1, answer["optimizer"], their_acc, r))
                their_acc = their_rows[-1]["val_acc"]
                who.learn()
            schedules.append(got)
        assert schedules[0] == schedules[1], algo


def test_dqn_settings_follow_document_004() -> None:
    agent = OptimizerSelector(SPACE, seed=0, algo="dqn", optimizers="2opt")
    s = agent.learner.settings
    assert (s.hidden, s.lr, s.gamma, s.replay_capacity, s.batch_size) == \
        ((64, 64), 1e-3, 0.99, 5000, 32)
    assert (s.td_loss, s.double_q, s.target_tau, s.target_update_freq) == \
        ("mse", False, 1.0, 20)
    assert agent.epsilon == 1.0
    agent.decisions = 10
    assert agent.epsilon == pytest.approx(0.995 ** 10)
    agent.decisions = 10_000
    assert agent.epsilon == 0.05
    ppo = OptimizerSelector(SPACE, seed=0, algo="ppo").learner.settings
    assert (ppo.activation, ppo.lr, ppo.lr_vf, ppo.batch_size, ppo.ppo_epochs, ppo.ppo_clip,
            ppo.ppo_entropy_coeff) == ("tanh", 3e-4, 1e-3, 4, 4, 0.2, 0.02)


def test_ppo_actor_and_critic_have_their_own_optimizers() -> None:
    agent = OptimizerSelector(SPACE, seed=0, algo="ppo")
    learner = agent.learner._learner_group._learner
    names = sorted(learner.get_optimizers_for_module("opt"), key=lambda x: x[0])
    assert [n for n, _ in names] == ["pi", "vf"]
    rates = {n: o.param_groups[0]["lr"] for n, o in names}
    assert rates == {"pi": pytest.approx(3e-4), "vf": pytest.approx(1e-3)}


def test_dqn_learns_once_learning_starts_transitions_are_in() -> None:
    agent = OptimizerSelector(SPACE, seed=0, algo="dqn", optimizers="2opt", learning_starts=4)
    run_episode(agent, "a", np.random.default_rng(0), epochs=4)  # 3 closed steps
    assert all(not any(k.startswith("learner_") for k in row) for row in agent.log)
    agent.decide(Observation("a", 4, EPOCHS, {}, [fake_row(5, "sgd", 0.3,
                                                           np.random.default_rng(1))]))
    agent.learn()
    assert "learner_opt/loss" in agent.log[-1]
