"""SAC agents (HYPERA's five HYPERA agents): RLlib's SAC on Box actions in
[-1, 1]^action_dim, one actor, twin critics and a learned temperature per agent, each agent
starting from its own temperature; decisions replayed from a uniform buffer.

RLlib 2.60's Learner state leaves out the learned temperature (`curr_log_alpha`), so the
snapshot carries it; SACConfig's actor rate defaults to 3e-5 and its buffer to the
prioritised one, so both are set. The squashed Gaussian is sampled here from
[mean, log_std] (log_std clamped to [-5, 2] as RLlib's `TorchSquashedGaussian` does).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_policies.agents import rllib_compat
from rllib_policies.agents.base import AgentSpec, Decision, ReplayLearner, module_config


class SACLearner(ReplayLearner):
    """Squashed-Gaussian policies per agent on Box actions; `epsilon` is not used (the
    temperature explores)."""

    algo = "sac"

    def _make_config(self) -> Any:
        from ray.rllib.algorithms.sac import SACConfig

        s = self.settings
        config = SACConfig().training(
            # SACConfig's own actor rate is 3e-5: every rate is set (HYPERA: 3e-4).
            actor_lr=s.lr, critic_lr=s.lr, alpha_lr=s.lr,
            gamma=s.gamma, tau=s.target_tau,
            target_network_update_freq=0,  # a soft update after every gradient step
            train_batch_size=s.batch_size, initial_alpha=s.initial_alpha,
            target_entropy="auto", n_step=1, twin_q=s.twin_q,
            num_steps_sampled_before_learning_starts=s.learning_starts,
            # The uniform buffer the other algorithms use (SAC's default is prioritised).
            replay_buffer_config={"type": "MultiAgentEpisodeReplayBuffer",
                                  "capacity": s.replay_capacity},
        )
        overrides = {aid: {"initial_alpha": float(spec.temperature)}
                     for aid, spec in self.agents.items() if spec.temperature is not None}
        hidden = list(s.hidden)
        return module_config(config, list(self.agents), {
            "fcnet_hiddens": hidden, "fcnet_activation": s.activation,
            "fusionnet_hiddens": hidden[-1:], "fusionnet_activation": s.activation,
            "head_fcnet_hiddens": []}, algorithm_config_overrides_per_module=overrides)

    def _check_spec(self, aid: str, spec: AgentSpec) -> None:
        if spec.obs_dim < 1 or spec.action_dim < 1:
            raise ValueError(f"agent {aid!r}: need obs_dim >= 1 and action_dim >= 1")

    def _action_space(self, spec: AgentSpec) -> gym.Space:
        return gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)

    def _action_count(self, spec: AgentSpec) -> int:
        return spec.action_dim

    def _action(self, aid: str, action: Any) -> Any:
        """A float32 vector clipped to [-1, 1]."""
        vec = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        if vec.shape != (self.agents[aid].action_dim,):
            raise ValueError(f"agent {aid!r}: action of shape {vec.shape}, expected "
                             f"({self.agents[aid].action_dim},)")
        return vec

    def _decide(self, aid: str, obs: np.ndarray, epsilon: float, rng: np.random.Generator,
                greedy: bool) -> Decision:
        """tanh(mean + std * noise), the noise from `rng`; the greedy action is tanh(mean).
        `probs` is empty, `extra["mean"]` the deterministic action."""
        module = self._module[aid]
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: self._obs_tensor(aid, obs)})
        mean, log_std = np.split(out[Columns.ACTION_DIST_INPUTS][0].detach().numpy().astype(
            np.float64), 2)
        log_std = np.clip(log_std, -5.0, 2.0)
        u = mean if greedy else mean + np.exp(log_std) * rng.standard_normal(mean.shape)
        action = np.tanh(u).astype(np.float32)
        return Decision(action, np.zeros(0), {"mean": np.tanh(mean).astype(np.float32),
                                              "log_std": log_std.astype(np.float32)})

    def greedy(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Each agent's tanh of its policy mean."""
        rng = np.random.default_rng(0)
        return {aid: self._decide(aid, o, 0.0, rng, True).action for aid, o in obs.items()}

    def q_values(self, aid: str, obs: np.ndarray, actions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Both critics' estimates Q1(obs, a), Q2(obs, a) for each row of `actions`
        (K x action_dim, in [-1, 1]); the learner's own module (the acting copy has no
        critics)."""
        module = rllib_compat.local_learner(self._learner_group).module[aid].unwrapped()
        acts = torch.as_tensor(np.asarray(actions, np.float32).reshape(
            -1, self.agents[aid].action_dim))
        obs_t = self._obs_tensor(aid, obs).expand(acts.shape[0], -1)
        batch = {Columns.OBS: obs_t, Columns.ACTIONS: acts}
        with torch.no_grad():
            q1, q2 = rllib_compat.critic_values(module, batch)
        return (q1.reshape(-1).numpy().astype(np.float64),
                q2.reshape(-1).numpy().astype(np.float64))

    def temperature(self, aid: str) -> float:
        """An agent's current entropy coefficient alpha."""
        return float(torch.exp(rllib_compat.log_alpha(self._learner_group)[aid]).item())

    def _extra_state(self) -> dict[str, Any] | None:
        log_alpha = rllib_compat.log_alpha(self._learner_group)
        return {a: float(log_alpha[a].detach()[0]) for a in self.agents}

    def _restore_extra(self, state: dict[str, Any]) -> None:
        log_alpha = rllib_compat.log_alpha(self._learner_group)
        with torch.no_grad():  # in place: the temperature's Adam holds this tensor
            for aid, value in state["log_alpha"].items():
                log_alpha[aid].fill_(value)
