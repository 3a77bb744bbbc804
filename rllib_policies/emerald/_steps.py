"""The bookkeeping both EMERALD-O modes share: the two agents on one RLlib learner, the
steps between an action and its reward (pending, keyed by trial), the reward, the step log
and its TensorBoard rows, and save/restore of all of it.

A step is opened when the agents act and closed when its result arrives; `learn` runs the
learner updates the closed steps are owed, one per step, separately, so an in-trial host can
answer a trial first and update afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rllib_policies.emerald._encoding import (
    ActionSet,
    EmeraldSettings,
    TrainingState,
    agents_label,
    budget_epsilon,
    encode,
    epsilon,
    shared_reward,
)
from rllib_policies.exploration import adaptive_epsilon
from service.core.space import SearchSpace


def step_record(step: dict[str, Any]) -> dict[str, Any]:
    """The logged part of a closed step: states, action probabilities, actions and the
    config they decode to."""
    return {
        **{f"action_{k}": d.action if np.ndim(d.action) == 0 else
           " ".join(f"{x:.3f}" for x in np.asarray(d.action)) for k, d in
           step["decisions"].items()},
        **{f"probs_{k}": " ".join(f"{p:.3f}" for p in d.probs)
           for k, d in step["decisions"].items()},
        **{f"state_{k}": " ".join(f"{x:.4g}" for x in v) for k, v in step["obs"].items()},
        **{f"config_{k}": v for k, v in step["config"].items()},
    }


class SplitLearner:
    """Agents on separate learners (Agent 1 on DQN or PPO, Agent 2 on SAC for the continuous
    rate head) behind one learner's interface: each call goes to the learner of each
    agent."""

    def __init__(self, learners: dict[str, Any]) -> None:
        self.learners = learners  # agent name -> MultiAgentLearner holding only that agent

    def _split(self, mapping: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {aid: {aid: mapping[aid]} for aid in self.learners if aid in mapping}

    def act(self, obs: dict[str, np.ndarray], **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for aid, part in self._split(obs).items():
            out.update(self.learners[aid].act(part, **kwargs))
        return out

    def greedy(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for aid, part in self._split(obs).items():
            out.update(self.learners[aid].greedy(part))
        return out

    def observe(self, obs: dict[str, np.ndarray], decisions: dict[str, Any], reward: Any,
                next_obs: dict[str, np.ndarray], **kwargs: Any) -> None:
        for aid, learner in self.learners.items():
            learner.observe({aid: obs[aid]}, {aid: decisions[aid]}, reward,
                            {aid: next_obs[aid]}, **kwargs)

    def update(self, flush: bool = False) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for learner in self.learners.values():
            metrics.update(learner.update(flush))
        return metrics

    def get_state(self) -> dict[str, Any]:
        return {aid: learner.get_state() for aid, learner in self.learners.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        for aid, learner in self.learners.items():
            learner.set_state(state[aid])

    def get_weights(self) -> dict[str, Any]:
        return {aid: learner.get_weights()[aid] for aid, learner in self.learners.items()}

    def load_weights(self, weights: dict[str, Any]) -> None:
        for aid, learner in self.learners.items():
            learner.load_weights({aid: weights[aid]})

    @property
    def replay_size(self) -> int:
        return sum(learner.replay_size for learner in self.learners.values())

    @property
    def num_steps(self) -> int:
        return max(learner.num_steps for learner in self.learners.values())

    def stop(self) -> None:
        for learner in self.learners.values():
            learner.stop()


class AgentSteps:
    """EMERALD-O's two agents (augmentation; optimizer and learning rate) and their steps."""

    def __init__(self, space: SearchSpace, settings: EmeraldSettings, *, seed: int,
                 gamma: float) -> None:
        from rllib_policies.agents import (
            AgentSpec,
            LearnerSettings,
            MultiAgentLearner,
            make_learner,
        )

        self.settings = settings
        self.actions = ActionSet.from_space(space, aug_actions=settings.aug_actions)
        self.rng = np.random.default_rng(seed)
        obs = self.encode(self.initial_state())
        s = settings

        def learner(algo: str, specs: dict[str, Any], seed: int) -> MultiAgentLearner:
            return make_learner(specs, LearnerSettings(
                algo=algo, hidden=s.hidden, lr=s.lr, gamma=gamma, batch_size=s.batch_size,
                learning_starts=s.learning_starts, updates_per_step=s.updates_per_step,
                seed=seed))

        dims = {name: int(obs[name].shape[0]) for name in obs}
        if s.lr_head == "continuous":  # Agent 2 on SAC with a Box action (section 4.4.2)
            self.learner: Any = SplitLearner({
                "aug": learner(s.algo, {"aug": AgentSpec(
                    obs_dim=dims["aug"], n_actions=self.actions.sizes["aug"])}, seed),
                "opt": learner("sac", {"opt": AgentSpec(
                    obs_dim=dims["opt"], action_dim=self.actions.opt_box_dim)}, seed + 1)})
        else:
            self.learner = learner(s.algo, {name: AgentSpec(obs_dim=dims[name], n_actions=n)
                                            for name, n in self.actions.sizes.items()}, seed)
        self.warm_source: dict[str, Any] | None = None
        if settings.warm_start:
            from rllib_policies.emerald._warm import load_agents

            payload = load_agents(settings.warm_start, self.actions,
                                  algo=agents_label(s.algo, s.lr_head),
                                  hidden=s.hidden)
            self.learner.load_weights(payload["weights"])
            # One level: where the weights came from, not that file's own history.
            self.warm_source = {**{k: v for k, v in payload["source"].items()
                                   if k != "warm_from"}, "file": settings.warm_start}
        self.steps = 0
        self.cumulative_k = 0.0  # Vashishtha's summed decay (adaptive epsilon only)
        self.pending: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self.unlearned = 0  # the last `unlearned` rows of the log still owe an update

    def initial_state(self, hp: dict[str, Any] | None = None) -> TrainingState:
        """The state before any step: the rate and optimizer in force (default: the
        geometric middle of the rate range and the first optimizer)."""
        hp = hp or {}
        low, high = self.actions.lr_range
        lr = float(hp.get("lr", math.sqrt(low * high)))
        opt = str(hp.get("optimizer", self.actions.optimizers[0]))
        if opt not in self.actions.optimizers:
            opt = self.actions.optimizers[0]
        return TrainingState(lr=lr, optimizer=opt, prev_lr=lr, prev_optimizer=opt)

    def encode(self, state: TrainingState) -> dict[str, np.ndarray]:
        return encode(state, self.actions.lr_range, self.actions.optimizers,
                      self.settings.lr_scale)

    @property
    def epsilon(self) -> float:
        s = self.settings
        if s.epsilon_lambda is not None:
            return adaptive_epsilon(self.cumulative_k, s.epsilon_start, s.epsilon_end)
        if s.epsilon_horizon is not None:
            return budget_epsilon(self.steps, s.epsilon_horizon, start=s.epsilon_start,
                                  end=s.epsilon_end)
        return epsilon(self.steps, start=s.epsilon_start, end=s.epsilon_end,
                       decay=s.epsilon_decay)

    def open(self, key: str, state: TrainingState, **extra: Any) -> dict[str, Any]:
        """Both agents act on `state` (epsilon-greedy); the step stays pending under `key`.
        `extra` is logged with the step."""
        obs = self.encode(state)
        eps = self.epsilon
        decisions = self.learner.act(obs, epsilon=eps, rng=self.rng)
        if self.settings.epsilon_lambda is not None:
            # Var(Q(s, .)) of the agents' Q-values (PPO's logits, whose epsilon is unused)
            spread = [d.extra.get("q_values", d.extra.get("action_dist_inputs"))
                      for d in decisions.values()]
            var = float(np.mean([np.var(q) for q in spread if q is not None] or [0.0]))
            self.cumulative_k += max(
                0.0, self.settings.epsilon_decay + self.settings.epsilon_lambda * var)
        config = self.actions.decode({k: d.action for k, d in decisions.items()})
        self.pending[key] = {"obs": obs, "decisions": decisions, "config": config,
                             "epsilon": eps, "grad_norms": [], "extra": extra}
        self.steps += 1
        return dict(config)

    def note_grad_norm(self, key: str, value: Any) -> None:
        """A gradient norm of the pending step `key` (the instability the reward penalises)."""
        step = self.pending.get(key)
        if step is not None and value is not None:
            step["grad_norms"].append(float(value))

    def close(self, key: str, before: TrainingState, result: dict[str, Any] | None, *,
              failed: bool, terminated: bool, early_stopped: bool = False
              ) -> TrainingState | None:
        """Close the pending step `key` with its result: the shared reward, a transition
        from `before` to the state after it, a log row. Returns the state after the step
        (`before` when it failed), or None when no step was pending."""
        step = self.pending.pop(key, None)
        if step is None:
            return None
        reward = shared_reward(before, result, self.settings.rewards, failed=failed,
                               early_stopped=early_stopped, grad_norms=step["grad_norms"])
        after = before if failed else before.advance(
            step["config"], float(result["val_acc"]),  # type: ignore[index]
            float((result or {}).get("train_loss", math.nan)), self.settings.ma_alpha)
        self.learner.observe(step["obs"], step["decisions"], reward, self.encode(after),
                             terminated=terminated or failed)
        self.log.append({
            "step": len(self.log) + 1, "trial_id": key, **step["extra"], "reward": reward,
            "failed": failed, "early_stopped": early_stopped, "epsilon": step["epsilon"],
            "val_acc": (result or {}).get("val_acc"),
            "train_loss": (result or {}).get("train_loss"), **step_record(step),
        })
        self.unlearned += 1
        return after

    def learn(self) -> dict[str, float]:
        """One learner update per closed step that has not had one; the metrics go into
        those steps' log rows. Returns the last update's metrics."""
        metrics: dict[str, float] = {}
        rows = self.log[len(self.log) - self.unlearned:] if self.unlearned else []
        for row in rows:
            metrics = self.learner.update()
            row.update({f"learner_{k}": v for k, v in metrics.items()})
        self.unlearned = 0
        return metrics

    def greedy(self, state: TrainingState) -> dict[str, Any]:
        """What the policies choose on `state` without exploration."""
        return self.actions.decode(self.learner.greedy(self.encode(state)))

    def save_agents(self, path: Any, source: dict[str, Any]) -> Any:
        """The agents' weights as a warm-start file (`rllib_policies.emerald._warm`); `source` says
        where they learned (a warm start's own source is kept under `warm_from`)."""
        from rllib_policies.emerald._warm import save_agents

        if self.warm_source is not None:
            source = {**source, "warm_from": self.warm_source}
        return save_agents(path, self.learner.get_weights(), self.actions,
                           algo=agents_label(self.settings.algo, self.settings.lr_head),
                           hidden=self.settings.hidden,
                           source={**source, "decisions": len(self.log)})

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "steps": self.steps,
                "cumulative_k": self.cumulative_k,
                "pending": self.pending, "log": self.log, "unlearned": self.unlearned,
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self.steps, self.pending, self.log = state["steps"], state["pending"], state["log"]
        self.cumulative_k = float(state.get("cumulative_k", 0.0))
        self.unlearned = state["unlearned"]
        self.rng.bit_generator.state = state["rng"]
