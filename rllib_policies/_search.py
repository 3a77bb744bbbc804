"""`emerald`: EMERALD-O's two agents as a Ray Tune Searcher.

Each trial is one step with a fixed configuration: `suggest` lets both policies act on the
current state, `on_trial_complete` turns the trial's result into the shared reward and
updates the RLlib learner. The state's moving averages come from completed trials, in the
order they complete (asynchronous under concurrency). Everything - learner weights and
optimizer state, replay buffer, counters, RNG, pending steps - is part of save/restore.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from rllib_policies._encoding import (
    ActionSet,
    RewardSettings,
    TrainingState,
    encode,
    epsilon,
    shared_reward,
)
from service.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class EmeraldSettings:
    """Settings of the EMERALD-O searcher; defaults follow the paper where it says."""

    algo: str = "dqn"
    hidden: tuple[int, ...] = (64, 32)
    lr: float = 1e-3
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay: float = 0.01
    ma_alpha: float = 0.3
    lr_scale: str = "log"
    rewards: RewardSettings = RewardSettings()
    batch_size: int = 16
    learning_starts: int = 4
    updates_per_step: int = 4


class EmeraldSearch(Searcher):
    """Two cooperating RL agents (augmentation; optimizer and learning rate) proposing one
    configuration per trial and learning from the shared reward."""

    def __init__(self, space: SearchSpace, *, metric: str = "val_acc", mode: str = "max",
                 seed: int = 0, settings: EmeraldSettings | None = None,
                 max_epochs: int | None = None, log_path: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        from rllib_policies._learner import AgentSpec, LearnerSettings, MultiAgentLearner

        self._space = space
        self.settings = settings or EmeraldSettings()
        self.actions = ActionSet.from_space(space)
        self._max_epochs = max_epochs
        self._rng = np.random.default_rng(seed)
        self._state = TrainingState(lr=math.sqrt(self.actions.lr_range[0] *
                                                 self.actions.lr_range[1]),
                                    prev_lr=math.sqrt(self.actions.lr_range[0] *
                                                      self.actions.lr_range[1]),
                                    optimizer=self.actions.optimizers[0],
                                    prev_optimizer=self.actions.optimizers[0])
        obs = self._observe()
        s = self.settings
        self.learner = MultiAgentLearner(
            {name: AgentSpec(obs_dim=int(obs[name].shape[0]), n_actions=n)
             for name, n in self.actions.sizes.items()},
            LearnerSettings(algo=s.algo, hidden=s.hidden, lr=s.lr, gamma=0.0,
                            batch_size=s.batch_size, learning_starts=s.learning_starts,
                            updates_per_step=s.updates_per_step, seed=seed),
        )
        self._steps = 0
        self._pending: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self._log_path = log_path
        self._tb_written = 0

    def _observe(self) -> dict[str, np.ndarray]:
        return encode(self._state, self.actions.lr_range, self.actions.optimizers,
                      self.settings.lr_scale)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    @property
    def epsilon(self) -> float:
        s = self.settings
        return epsilon(self._steps, start=s.epsilon_start, end=s.epsilon_end,
                       decay=s.epsilon_decay)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        obs = self._observe()
        decisions = self.learner.act(obs, epsilon=self.epsilon, rng=self._rng)
        actions = {name: d.action for name, d in decisions.items()}
        config = self.actions.decode(actions)
        self._pending[trial_id] = {"obs": obs, "decisions": decisions, "config": config,
                                   "epsilon": self.epsilon, "grad_norms": []}
        self._steps += 1
        return dict(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        step = self._pending.get(trial_id)
        if step is not None and result.get("grad_norm") is not None:
            step["grad_norms"].append(float(result["grad_norm"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        step = self._pending.pop(trial_id, None)
        if step is None:
            return
        before = self._state
        value = (result or {}).get(self.metric)
        failed = error or value is None or not math.isfinite(float(value)) or bool(
            (result or {}).get("diverged"))
        epochs = int((result or {}).get("training_iteration", 0) or 0)
        early = (not failed and self._max_epochs is not None and 0 < epochs < self._max_epochs)
        reward = shared_reward(before, result, self.settings.rewards, failed=failed,
                               early_stopped=early, grad_norms=step["grad_norms"])
        if not failed:
            self._state = before.advance(step["config"], float(result["val_acc"]),
                                         float(result.get("train_loss", math.nan)),
                                         self.settings.ma_alpha)
        next_obs = self._observe()
        self.learner.observe(step["obs"], step["decisions"], reward, next_obs, terminated=True)
        metrics = self.learner.update()
        row = {"step": len(self.log) + 1, "trial_id": trial_id, "reward": reward,
               "failed": failed, "early_stopped": early, "epsilon": step["epsilon"],
               "val_acc": (result or {}).get("val_acc"),
               "train_loss": (result or {}).get("train_loss"),
               **step_record(step, metrics)}
        self.log.append(row)
        if self._log_path:
            write_log(self.log, self._log_path)

    def greedy_config(self) -> dict[str, Any]:
        """What the policies choose now without exploration."""
        return self.actions.decode(self.learner.greedy(self._observe()))

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "state": dataclasses.asdict(self._state),
                "steps": self._steps, "pending": self._pending, "log": self.log,
                "rng": self._rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self._state = TrainingState(**state["state"])
        self._steps, self._pending, self.log = state["steps"], state["pending"], state["log"]
        self._rng.bit_generator.state = state["rng"]
        self._tb_written = len(self.log)  # written to TensorBoard when this state was saved

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)
        # Tune saves searchers into the experiment folder: the step log goes beside it.
        folder = Path(checkpoint_path).parent
        write_log(self.log, folder / STEP_LOG)
        self._tb_written = write_tensorboard(self.log, folder / "emerald_tb",
                                             self._tb_written)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file


STEP_LOG = "emerald_steps.csv"


def step_record(step: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """The logged part of a closed step: states, action probabilities, actions, the config
    they decode to and the learner's metrics."""
    return {
        **{f"action_{k}": d.action for k, d in step["decisions"].items()},
        **{f"probs_{k}": " ".join(f"{p:.3f}" for p in d.probs)
           for k, d in step["decisions"].items()},
        **{f"state_{k}": " ".join(f"{x:.4g}" for x in v) for k, v in step["obs"].items()},
        **{f"config_{k}": v for k, v in step["config"].items()},
        **{f"learner_{k}": v for k, v in metrics.items()},
    }


def write_tensorboard(rows: list[dict[str, Any]], folder: str | Path, start: int) -> int:
    """Per-step reward, epsilon, actions and metrics as TensorBoard scalars (rows from
    `start` on); returns how many rows are written in all."""
    if len(rows) <= start:
        return start
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for row in rows[start:]:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                        key != "step" and value == value:
                    writer.add_scalar(f"emerald/{key}", value, row["step"])
    return len(rows)


def write_log(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Per-step state, action probabilities, actions and rewards as CSV."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
