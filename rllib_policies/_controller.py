"""`emerald-dynamic`: EMERALD-O's episodic schedule inside running trials.

Every `step_epochs` epochs (a step; the paper runs episodes of 50 steps of 50 epochs) a trial
asks the controller, a named Ray actor holding one agent state for all concurrent trials, for
the augmentation, optimizer and learning rate of its next step. The controller closes the
trial's previous step (reward from the epochs just trained, a transition to the new state),
updates the learner and answers from the trial's current state. A trial is an episode.
The Searcher part (`ControllerSearch`) starts the controller, fills Tune's trial slots and
saves / restores the controller's whole state with the experiment.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import uuid
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from rllib_policies._encoding import (
    ActionSet,
    TrainingState,
    encode,
    epsilon,
    shared_reward,
)
from rllib_policies._search import (
    STEP_LOG,
    EmeraldSettings,
    step_record,
    write_log,
    write_tensorboard,
)
from service.space import SearchSpace

DYNAMIC_GAMMA = 0.9
"""Discount between the steps of one trial: a step's choice also shapes the later steps."""


class EmeraldController:
    """The agents and their learner, shared by all trials of an experiment."""

    def __init__(self, space: dict[str, Any], *, seed: int = 0,
                 settings: EmeraldSettings | None = None) -> None:
        import torch

        from rllib_policies._learner import AgentSpec, LearnerSettings, MultiAgentLearner

        torch.set_num_threads(1)  # trials share the machine: contention slows updates 10-30x
        self.space = SearchSpace.from_dict(space)
        self.settings = settings or EmeraldSettings()
        self.actions = ActionSet.from_space(self.space)
        self.rng = np.random.default_rng(seed)
        obs = self._encode(self._initial_state({}))
        s = self.settings
        self.learner = MultiAgentLearner(
            {name: AgentSpec(obs_dim=int(obs[name].shape[0]), n_actions=n)
             for name, n in self.actions.sizes.items()},
            LearnerSettings(algo=s.algo, hidden=s.hidden, lr=s.lr, gamma=DYNAMIC_GAMMA,
                            batch_size=s.batch_size, learning_starts=s.learning_starts,
                            updates_per_step=s.updates_per_step, seed=seed),
        )
        self.steps = 0
        self.trials: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []

    def _initial_state(self, hp: dict[str, Any]) -> TrainingState:
        lr = float(hp.get("lr", math.sqrt(self.actions.lr_range[0] * self.actions.lr_range[1])))
        opt = str(hp.get("optimizer", self.actions.optimizers[0]))
        return TrainingState(lr=lr, optimizer=opt, prev_lr=lr, prev_optimizer=opt)

    def _encode(self, state: TrainingState) -> dict[str, np.ndarray]:
        return encode(state, self.actions.lr_range, self.actions.optimizers,
                      self.settings.lr_scale)

    def _close_step(self, trial_id: str, track: dict[str, Any], last: dict[str, Any] | None,
                    terminated: bool) -> None:
        step = track.pop("pending", None)
        if step is None:
            return
        before: TrainingState = track["state"]
        failed = not last or bool(last.get("diverged")) or not math.isfinite(
            float(last.get("val_acc", math.nan)))
        reward = shared_reward(before, last, self.settings.rewards, failed=failed,
                               grad_norms=(last or {}).get("step_grad_norms", ()))
        if not failed:
            track["state"] = before.advance(step["config"], float(last["val_acc"]),
                                            float(last["train_loss"]),
                                            self.settings.ma_alpha)
        next_obs = self._encode(track["state"])
        self.learner.observe(step["obs"], step["decisions"], reward, next_obs,
                             terminated=terminated or failed)
        metrics = self.learner.update()
        self.log.append({
            "step": len(self.log) + 1, "trial_id": trial_id, "epoch": step["epoch"],
            "reward": reward, "failed": failed, "epsilon": step["epsilon"],
            "val_acc": (last or {}).get("val_acc"), "train_loss": (last or {}).get("train_loss"),
            **step_record(step, metrics),
        })

    def decide(self, trial_id: str, epoch: int, last: dict[str, Any] | None,
               hp: dict[str, Any]) -> dict[str, Any]:
        """Called by a trial at the start of each step: the hyperparameters for the step."""
        track = self.trials.setdefault(trial_id, {"state": self._initial_state(hp)})
        self._close_step(trial_id, track, last, terminated=False)
        obs = self._encode(track["state"])
        eps = epsilon(self.steps, start=self.settings.epsilon_start,
                      end=self.settings.epsilon_end, decay=self.settings.epsilon_decay)
        decisions = self.learner.act(obs, epsilon=eps, rng=self.rng)
        config = self.actions.decode({k: d.action for k, d in decisions.items()})
        track["pending"] = {"obs": obs, "decisions": decisions, "config": config,
                            "epoch": epoch, "epsilon": eps}
        self.steps += 1
        return dict(config)

    def finish(self, trial_id: str, last: dict[str, Any] | None) -> None:
        """Called when a trial ends: its last step's reward closes the episode."""
        track = self.trials.pop(trial_id, None)
        if track is not None:
            self._close_step(trial_id, track, last, terminated=True)

    def greedy(self, hp: dict[str, Any]) -> dict[str, Any]:
        state = self._initial_state(hp)
        return self.actions.decode(self.learner.greedy(self._encode(state)))

    def get_state(self) -> dict[str, Any]:
        trials = {tid: {**t, "state": dataclasses.asdict(t["state"])}
                  for tid, t in self.trials.items()}
        return {"learner": self.learner.get_state(), "steps": self.steps, "trials": trials,
                "log": self.log, "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self.steps, self.log = state["steps"], state["log"]
        self.trials = {tid: {**t, "state": TrainingState(**t["state"])}
                       for tid, t in state["trials"].items()}
        self.rng.bit_generator.state = state["rng"]

    def step_log(self) -> list[dict[str, Any]]:
        return self.log


class ControllerSearch(Searcher):
    """Starts the controller and lets Tune run `num_samples` trials whose hyperparameters
    the controller sets at run time. Without a Ray connection, or with `in_process=True`
    (unit tests), the controller lives in this process."""

    def __init__(self, space: SearchSpace, *, metric: str = "val_acc", mode: str = "max",
                 seed: int = 0, settings: EmeraldSettings | None = None,
                 name: str | None = None, in_process: bool = False) -> None:
        super().__init__(metric=metric, mode=mode)
        self.name = name or f"emerald-dynamic-{uuid.uuid4().hex[:8]}"
        self._in_process = in_process
        self._args = (space.to_dict(), seed, settings)
        self._controller: Any = None
        self._tb_written = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher with the Tuner: an actor handle must not travel; the
        # stable name finds (or recreates) the controller after a restore.
        state = dict(self.__dict__)
        if not isinstance(state["_controller"], EmeraldController):
            state["_controller"] = None
        return state

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        if self._controller is None:
            space, seed, settings = self._args
            if ray.is_initialized() and not self._in_process:
                actor = ray.remote(num_cpus=0)(EmeraldController)
                self._controller = actor.options(name=self.name, get_if_exists=True).remote(
                    space, seed=seed, settings=settings)
            else:
                self._controller = EmeraldController(space, seed=seed, settings=settings)
        if isinstance(self._controller, EmeraldController):
            return getattr(self._controller, method)(*args)
        return ray.get(getattr(self._controller, method).remote(*args))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._call("get_state")  # make sure the controller exists before the trial starts
        return {}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if error:  # the trial could not report its last step: close it as a failure
            self._call("finish", trial_id, None)

    def get_state(self) -> dict[str, Any]:
        return {"controller": self._call("get_state"), "name": self.name}

    def set_state(self, state: dict[str, Any]) -> None:
        self._call("set_state", state["controller"])
        self._tb_written = len(state["controller"]["log"])  # written when it was saved

    def save(self, checkpoint_path: str) -> None:
        from pathlib import Path

        state = self.get_state()
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)
        folder = Path(checkpoint_path).parent
        log = state["controller"]["log"]
        write_log(log, folder / STEP_LOG)
        self._tb_written = write_tensorboard(log, folder / "emerald_tb", self._tb_written)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file
