"""`emerald`: EMERALD-O's two agents as a Ray Tune Searcher.

Each trial is one step with a fixed configuration: `suggest` lets both policies act on the
current state, `on_trial_complete` turns the trial's result into the shared reward and
updates the RLlib learner. The state's moving averages come from completed trials, in the
order they complete (asynchronous under concurrency). Everything - learner weights and
optimizer state, replay buffer, counters, RNG, pending steps - is part of save/restore.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from rllib_policies.emerald._encoding import EmeraldSettings, TrainingState
from rllib_policies.emerald._steps import AgentSteps
from rllib_policies.emerald._warm import AGENTS_FILE
from service.backends.tune.searching import write_log, write_tensorboard
from service.core.layout import STEP_LOG, STEP_TB
from service.core.space import SearchSpace


class EmeraldSearch(Searcher):
    """Two cooperating RL agents (augmentation; optimizer and learning rate) proposing one
    configuration per trial and learning from the shared reward."""

    def __init__(self, space: SearchSpace, *, metric: str = "val_acc", mode: str = "max",
                 seed: int = 0, settings: EmeraldSettings | None = None,
                 max_epochs: int | None = None, log_path: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.settings = settings or EmeraldSettings()
        self.agents = AgentSteps(space, self.settings, seed=seed, gamma=0.0)
        self.actions = self.agents.actions
        self.learner = self.agents.learner
        self._max_epochs = max_epochs
        self._state = self.agents.initial_state()
        self._log_path = log_path
        self._tb_written = 0

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.agents.log

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    @property
    def epsilon(self) -> float:
        return self.agents.epsilon

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self.agents.open(trial_id, self._state)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.agents.note_grad_norm(trial_id, result.get("grad_norm"))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        value = (result or {}).get(self.metric)
        failed = error or value is None or not math.isfinite(float(value)) or bool(
            (result or {}).get("diverged"))
        epochs = int((result or {}).get("training_iteration", 0) or 0)
        early = (not failed and self._max_epochs is not None and 0 < epochs < self._max_epochs)
        after = self.agents.close(trial_id, self._state, result, failed=failed,
                                  terminated=True, early_stopped=early)
        if after is None:
            return
        self._state = after
        # The searcher runs in Tune's driver, not on a trial's path: learn at once.
        self.agents.learn()
        if self._log_path:
            write_log(self.log, self._log_path)

    def greedy_config(self) -> dict[str, Any]:
        """What the policies choose now without exploration."""
        return self.agents.greedy(self._state)

    def get_state(self) -> dict[str, Any]:
        return {"agents": self.agents.get_state(), "state": dataclasses.asdict(self._state)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.agents.set_state(state["agents"])
        self._state = TrainingState(**state["state"])
        self._tb_written = len(self.log)  # written to TensorBoard when this state was saved

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)
        # Tune saves searchers into the experiment folder: the step log goes beside it.
        folder = Path(checkpoint_path).parent
        write_log(self.log, folder / STEP_LOG)
        self.agents.save_agents(folder / AGENTS_FILE, {"experiment": str(folder)})
        self._tb_written = write_tensorboard(self.log, folder / STEP_TB,
                                             self._tb_written)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file
