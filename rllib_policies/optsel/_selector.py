"""Pham 2024: an RL agent chooses the optimizer of every epoch of a running trial (SGD vs
SAM for DQN; SGD / SAM / Adam, "3-opt", or SGD / SAM, "2-opt", for PPO), as a `Controller`
(service.core.api) on the generic host (service.backends.tune.searching).

Each epoch (`step_epochs`) the trial asks; the controller closes the trial's previous step
with the composite reward of Pham 2024 3.2.2.2 and answers from the state vector of
3.2.2.1. The trainer switches the optimizer in place on the same weights, each optimizer
with its own learning rate. A trial is one multi-step episode: PPO learns from its steps as
one chain (GAE over it, rollouts of K = 4 steps, bootstrapped where a rollout cuts the chain;
an update also runs when an episode ends), DQN replays its steps one by one with gamma 0.99.
The agents are RLlib's DQN and PPO learners (`rllib_policies.agents`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.api import Observation
from service.core.space import OPTIMIZER_LR as DEFAULT_LR
from service.core.space import SearchSpace

LOSS_SCALE = 2.0
"""val_loss / LOSS_SCALE in the state (Pham 2024 3.2.2.3, "for stability")."""

OPTIMIZER_SETS: dict[str, tuple[str, ...]] = {"2opt": ("sgd", "sam"),
                                              "3opt": ("sgd", "sam", "adam")}
"""Pham's action sets: DQN and PPO 2-opt choose SGD or SAM; PPO 3-opt adds Adam."""

FAIL_REWARD = -1.0
"""Reward of a diverged or failed epoch (ends the episode)."""

DQN_EPSILON_MIN = 0.05
DQN_EPSILON_DECAY = 0.995
"""epsilon <- max(epsilon_min, 0.995 epsilon) per decision (Pham 2024 3.2.1.2)."""


@dataclass(frozen=True)
class RewardWeights:
    """r_t = acc * delta val_acc + loss * (previous - current val_loss) - time * epoch
    seconds, plus final * val_acc at the trial's last epoch (Pham 2024 3.2.2.2; it gives
    no weights).

    Defaults: the accuracy gains telescope to the final accuracy (acc 1.0), and the final
    bonus (1.0) counts it once more, so where a trial ends matters as much as how it got
    there; a loss drop in nats is a tie-breaker (0.1); time costs 1e-4 per second, so on the
    document's GPU (SGD ~8 s, SAM ~20 s an epoch) SAM's extra cost is 0.12 accuracy points
    per epoch: it must pay for itself, and it does not dominate."""

    acc: float = 1.0
    loss: float = 0.1
    time: float = 1e-4
    final: float = 1.0


def failed(row: dict[str, Any] | None) -> bool:
    """Whether an epoch row is missing, diverged or has no finite validation metrics."""
    if not row or row.get("diverged"):
        return True
    values = (row.get("val_acc"), row.get("val_loss"))
    return not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def epoch_reward(prev: dict[str, Any] | None, row: dict[str, Any], weights: RewardWeights,
                 *, seconds: float | None = None, last: bool = False) -> float:
    """The reward of one step ending in `row` after `prev` (None: the trial's first step,
    against accuracy 0 and no loss change); `seconds` is the step's training time (default:
    the row's epoch time). A diverged or non-finite row earns FAIL_REWARD."""
    if failed(row):
        return FAIL_REWARD
    acc, loss = float(row["val_acc"]), float(row["val_loss"])
    prev_acc = float(prev["val_acc"]) if prev else 0.0
    prev_loss = float(prev["val_loss"]) if prev else loss
    spent = float(row.get("epoch_time_s", 0.0)) if seconds is None else seconds
    reward = weights.acc * (acc - prev_acc) + weights.loss * (prev_loss - loss) \
        - weights.time * spent
    return reward + (weights.final * acc if last else 0.0)


def state_vector(last: dict[str, Any] | None, prev: dict[str, Any] | None, *, epoch: int,
                 max_epochs: int, prev_action: int | None, n_actions: int,
                 grad_norm: bool = False) -> np.ndarray:
    """[val_acc, val_loss / LOSS_SCALE, delta acc, delta loss (previous - current), epoch /
    n_epochs, one-hot(previous optimizer)] (Pham 2024 3.2.2.1: 8 numbers for three
    optimizers), then log10(1 + grad norm) with `grad_norm` (DQN's state, 1.3). Zeros where
    nothing is known yet (before the first epoch, no previous optimizer)."""
    acc = float(last["val_acc"]) if last else 0.0
    loss = float(last["val_loss"]) if last else 0.0
    d_acc = acc - float(prev["val_acc"]) if last and prev else 0.0
    d_loss = float(prev["val_loss"]) - loss if last and prev else 0.0
    one_hot = np.zeros(n_actions)
    if prev_action is not None:
        one_hot[prev_action] = 1.0
    values = [acc, loss / LOSS_SCALE, d_acc, d_loss, epoch / max(1, max_epochs), *one_hot]
    if grad_norm:
        norm = float(last.get("grad_norm", 0.0)) if last else 0.0
        values.append(math.log10(1.0 + norm) if math.isfinite(norm) else 0.0)
    out = np.asarray(values, dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def parse_optimizers(text: str) -> tuple[str, ...]:
    """`2opt`, `3opt` or a comma list of optimizer names, as a tuple (checked by the
    entry)."""
    if text in OPTIMIZER_SETS:
        return OPTIMIZER_SETS[text]
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


@dataclass
class _Trial:
    """One running trial (an episode): its last two epoch rows and the step in flight."""

    last: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None
    prev_action: int | None = None
    pending: dict[str, Any] | None = None


_ROW_KEYS = ("val_acc", "val_loss", "grad_norm", "epoch_time_s", "diverged")


class OptimizerSelector:
    """Pham's agent, shared by all trials of an experiment: one RLlib learner ("opt")
    whose action is the optimizer of the next step."""

    AGENT = "opt"

    def __init__(self, space: SearchSpace, *, seed: int = 0, algo: str = "ppo",
                 optimizers: str = "3opt", lr_sgd: float = DEFAULT_LR["sgd"],
                 lr_sam: float = DEFAULT_LR["sam"], lr_adam: float = DEFAULT_LR["adam"],
                 w_acc: float = 1.0, w_loss: float = 0.1, w_time: float = 1e-4,
                 w_final: float = 1.0, epsilon_start: float = 1.0,
                 epsilon_decay: float = DQN_EPSILON_DECAY, learning_starts: int = 32) -> None:
        from rllib_policies.agents import AgentSpec, make_learner

        self.algo = algo
        self.optimizers = parse_optimizers(optimizers)
        rates = {**DEFAULT_LR, "sgd": lr_sgd, "sam": lr_sam, "adam": lr_adam}
        self.rates = {name: float(rates[name]) for name in self.optimizers}
        self.weights = RewardWeights(w_acc, w_loss, w_time, w_final)
        self.epsilon_start, self.epsilon_decay = epsilon_start, epsilon_decay
        self.grad_norm = algo == "dqn"
        self.rng = np.random.default_rng(seed)
        obs_dim = len(self._state(_Trial(), epoch=0, max_epochs=1))
        self.learner = make_learner(
            {self.AGENT: AgentSpec(obs_dim=obs_dim, n_actions=len(self.optimizers))},
            learner_settings(algo, seed, learning_starts))
        self.trials: dict[str, _Trial] = {}
        self.decisions = 0
        self.log: list[dict[str, Any]] = []
        self.unlearned: list[dict[str, Any]] = []

    # The controller protocol.

    def decide(self, obs: Observation) -> dict[str, Any]:
        """Close the trial's previous step with the epochs just trained; choose the next
        step's optimizer (and its rate)."""
        start = time.perf_counter()
        trial = self.trials.setdefault(obs.trial_id, _Trial())
        if trial.pending is not None:
            if obs.rows:
                self._close(obs.trial_id, trial, obs.rows, obs.max_epochs, terminal=False)
            else:  # asked again without a result (a restarted trial): decide afresh
                trial.pending = None
        state = self._state(trial, epoch=obs.epoch, max_epochs=obs.max_epochs)
        eps = self.epsilon
        decision = self.learner.act({self.AGENT: state}, epsilon=eps, rng=self.rng)[self.AGENT]
        trial.pending = {"obs": state, "decision": decision, "epsilon": eps,
                         "epoch": obs.epoch, "decide_s": time.perf_counter() - start}
        trial.prev_action = decision.action
        self.decisions += 1
        name = self.optimizers[decision.action]
        return {"optimizer": name, "lr": self.rates[name]}

    def finish(self, obs: Observation) -> None:
        """The trial ended (its budget, early stopping, or a failure): the last step closes
        the episode, with the final bonus."""
        trial = self.trials.pop(obs.trial_id, None)
        if trial is None or trial.pending is None:
            return
        self._close(obs.trial_id, trial, obs.rows, obs.max_epochs, terminal=True)

    def learn(self) -> dict[str, float]:
        """The learner updates the closed steps are owed: DQN one replay update per step,
        PPO one when a rollout of K steps is full or an episode ended."""
        metrics: dict[str, float] = {}
        for row in self.unlearned:
            start = time.perf_counter()
            metrics = self.learner.update(flush=bool(row["terminal"]))
            row["update_s"] = time.perf_counter() - start
            row.update({f"learner_{k}": v for k, v in metrics.items()})
        self.unlearned = []
        return metrics

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        return self.log[start:]

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "trials": self.trials,
                "decisions": self.decisions, "log": self.log,
                "unlearned": [row["step"] for row in self.unlearned],
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        import copy

        self.learner.set_state(state["learner"])
        self.trials = copy.deepcopy(state["trials"])
        self.decisions = int(state["decisions"])
        self.log = copy.deepcopy(state["log"])
        owed = set(state["unlearned"])
        self.unlearned = [row for row in self.log if row["step"] in owed]
        self.rng.bit_generator.state = state["rng"]

    # What the agent sees and earns.

    @property
    def epsilon(self) -> float:
        """DQN's exploration after `decisions` decisions (PPO samples its policy instead)."""
        if self.algo != "dqn":
            return 0.0
        return max(DQN_EPSILON_MIN, self.epsilon_start * self.epsilon_decay ** self.decisions)

    def _state(self, trial: _Trial, *, epoch: int, max_epochs: int) -> np.ndarray:
        return state_vector(trial.last, trial.prev, epoch=epoch, max_epochs=max_epochs,
                            prev_action=trial.prev_action, n_actions=len(self.optimizers),
                            grad_norm=self.grad_norm)

    def greedy(self, state: np.ndarray) -> str:
        """The optimizer the agent picks on `state` without exploring."""
        return self.optimizers[self.learner.greedy({self.AGENT: state})[self.AGENT]]

    def _close(self, key: str, trial: _Trial, rows: list[dict[str, Any]], max_epochs: int,
               *, terminal: bool) -> None:
        step = trial.pending
        trial.pending = None
        assert step is not None
        last = {k: rows[-1].get(k) for k in _ROW_KEYS} if rows else None
        broken = failed(last)
        if broken:
            reward = FAIL_REWARD
        else:
            seconds = sum(float(r.get("epoch_time_s", 0.0)) for r in rows)
            reward = epoch_reward(trial.last, last, self.weights, seconds=seconds,
                                  last=terminal)
            trial.prev, trial.last = trial.last, last
        epoch = step["epoch"] + len(rows)
        after = self._state(trial, epoch=epoch, max_epochs=max_epochs)
        done = terminal or broken
        self.learner.observe({self.AGENT: step["obs"]}, {self.AGENT: step["decision"]},
                             reward, {self.AGENT: after}, terminated=done, key=key)
        decision = step["decision"]
        row = {
            "step": len(self.log) + 1, "trial_id": key, "epoch": step["epoch"],
            "reward": reward, "failed": broken, "terminal": done,
            "epsilon": step["epsilon"], "action_opt": decision.action,
            "optimizer": self.optimizers[decision.action],
            "probs_opt": " ".join(f"{p:.3f}" for p in decision.probs),
            "state_opt": " ".join(f"{x:.4g}" for x in step["obs"]),
            "val_acc": None if last is None else last["val_acc"],
            "decide_s": step["decide_s"],
        }
        self.log.append(row)
        self.unlearned.append(row)


def learner_settings(algo: str, seed: int, learning_starts: int = 32) -> Any:
    """The RLlib learner settings of Pham 2024 3.2.1.2 (DQN) and 3.2.2.3 (PPO);
    `learning_starts` is DQN's transitions before its first update (the document gives
    none; default one batch)."""
    from rllib_policies.agents import LearnerSettings

    if algo == "dqn":
        # MLP 2 x 64 ReLU, lr 1e-3, gamma 0.99, replay 5000, batch 32, MSE loss, target
        # copied (tau 1) every 20 updates (one update per step: 20 env steps), max over the
        # target net (no double Q).
        return LearnerSettings(algo="dqn", hidden=(64, 64), lr=1e-3, gamma=0.99,
                               batch_size=32, replay_capacity=5000,
                               learning_starts=learning_starts,
                               updates_per_step=1, seed=seed, target_tau=1.0,
                               target_update_freq=20, td_loss="mse", double_q=False)
    # Actor and critic 2 x 64 tanh, gamma 0.99, GAE lambda 0.95, rollout K = 4, 4 PPO
    # epochs, clip 0.2, entropy 0.02, LR_pi 3e-4, LR_v 1e-3.
    return LearnerSettings(algo="ppo", hidden=(64, 64), activation="tanh", lr=3e-4,
                           lr_vf=1e-3, gamma=0.99, batch_size=4, ppo_epochs=4,
                           ppo_clip=0.2, ppo_entropy_coeff=0.02, seed=seed)
