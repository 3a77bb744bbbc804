"""`emerald-dynamic`: EMERALD-O's episodic schedule inside running trials, as a `Controller`
(service.core.api) on the generic host (service.backends.tune.searching).

Every `step_epochs` epochs (a step; the paper runs episodes of 50 steps of 50 epochs) a trial
asks for the augmentation, optimizer and learning rate of its next step. The controller
closes the trial's previous step (reward from the epochs just trained, a transition to the
new state) and answers from the trial's current state; the learner update that step is owed
runs in `learn`, after the trial has its answer. A trial is an episode.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rllib_policies.emerald._encoding import EmeraldSettings, TrainingState
from rllib_policies.emerald._steps import AgentSteps
from service.core.api import Observation
from service.core.space import SearchSpace

DYNAMIC_GAMMA = 0.9
"""Discount between the steps of one trial: a step's choice also shapes the later steps."""


def step_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the agents learn from a step: its last epoch's row plus the gradient norms of
    all its epochs (the instability the reward penalises)."""
    if not rows:
        return None
    return {**rows[-1], "step_grad_norms": [r.get("grad_norm") for r in rows]}


class EmeraldController:
    """The agents and their learner, shared by all trials of an experiment."""

    def __init__(self, space: SearchSpace, *, seed: int = 0,
                 settings: EmeraldSettings | None = None, **options: Any) -> None:
        """`options`: the entry's (EmeraldSettings.from_options' keywords, `decisions`)."""
        import torch

        torch.set_num_threads(1)  # trials share the machine: contention slows updates 10-30x
        self.settings = settings or EmeraldSettings.from_options(**options)
        self.agents = AgentSteps(space, self.settings, seed=seed, gamma=DYNAMIC_GAMMA)
        self.states: dict[str, TrainingState] = {}

    def _close(self, obs: Observation, *, terminated: bool) -> None:
        state = self.states.get(obs.trial_id)
        if state is None:
            return
        last = step_summary(obs.rows)
        failed = not last or bool(last.get("diverged")) or not math.isfinite(
            float(last.get("val_acc", math.nan)))
        for norm in (last or {}).get("step_grad_norms", ()):
            self.agents.note_grad_norm(obs.trial_id, norm)
        # A trial that ends before its budget without failing was stopped early (5.1.2).
        early = terminated and not failed and obs.epoch < obs.max_epochs
        after = self.agents.close(obs.trial_id, state, last, failed=failed,
                                  terminated=terminated, early_stopped=early)
        if after is not None:
            self.states[obs.trial_id] = after

    def decide(self, obs: Observation) -> dict[str, Any]:
        """The trial's next step: close its previous one, act on its state."""
        self.states.setdefault(obs.trial_id, self.agents.initial_state(obs.hp))
        self._close(obs, terminated=False)
        return self.agents.open(obs.trial_id, self.states[obs.trial_id], epoch=obs.epoch)

    def finish(self, obs: Observation) -> None:
        """The trial ended: its last step's reward closes the episode."""
        self._close(obs, terminated=True)
        self.states.pop(obs.trial_id, None)

    def learn(self) -> dict[str, float]:
        return self.agents.learn()

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        return self.agents.log[start:]

    def greedy(self, hp: dict[str, Any]) -> dict[str, Any]:
        return self.agents.greedy(self.agents.initial_state(hp))

    def get_state(self) -> dict[str, Any]:
        return {"agents": self.agents.get_state(),
                "states": {tid: dataclasses.asdict(s) for tid, s in self.states.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.agents.set_state(state["agents"])
        self.states = {tid: TrainingState(**s) for tid, s in state["states"].items()}
