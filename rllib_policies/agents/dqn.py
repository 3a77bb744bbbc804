"""DQN agents (EMERALD-O sections 4.3 and 4.4; Pham's DQN optimizer selector): RLlib's
DQN loss on a plain MLP Q-network, epsilon-greedy actions with the caller's epsilon, one-step
decisions replayed from a buffer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rllib_policies.agents.base import Decision, ReplayLearner, module_config


class DQNLearner(ReplayLearner):
    """Q-networks per agent; `act` is epsilon-greedy on their Q-values."""

    algo = "dqn"

    def _make_config(self) -> Any:
        from ray.rllib.algorithms.dqn import DQNConfig

        s = self.settings
        config = DQNConfig().training(
            lr=s.lr,
            gamma=s.gamma,
            train_batch_size=s.batch_size,
            double_q=s.double_q,  # stabler targets once gamma > 0
            dueling=False,  # EMERALD-O: plain MLP Q-network
            n_step=1,  # one-step episodes; longer returns come from bootstrapping
            num_atoms=1,
            noisy=False,  # exploration is the caller's epsilon
            tau=s.target_tau,
            # The Learner counts env steps: 1 is a (soft) update after every step.
            target_network_update_freq=s.target_update_freq,
            # RLlib's default "huber" is robust to outlier rewards (e.g. a diverged trial).
            # Measured on the test bandit: no difference to "mse".
            td_error_loss_fn=s.td_loss,
            num_steps_sampled_before_learning_starts=s.learning_starts,
            replay_buffer_config={
                "type": "MultiAgentEpisodeReplayBuffer",
                "capacity": s.replay_capacity,
            },
        )
        return module_config(config, list(self.agents),
                             {"fcnet_hiddens": list(s.hidden),
                              "fcnet_activation": s.activation})

    def _module_scores(self, module: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Q-values."""
        return module.compute_q_values(batch)["qf_preds"]

    def _decide(self, aid: str, obs: np.ndarray, epsilon: float, rng: np.random.Generator,
                greedy: bool) -> Decision:
        """Epsilon-greedy (`greedy`: epsilon 0); `probs` is that epsilon-greedy distribution
        and `extra["q_values"]` the raw Q-values."""
        scores = self._scores(aid, obs)
        n = scores.shape[0]
        best = int(np.argmax(scores))
        eps = 0.0 if greedy else float(epsilon)
        probs = np.full(n, eps / n)
        probs[best] += 1.0 - eps
        action = int(rng.integers(n)) if eps > 0 and rng.random() < eps else best
        return Decision(action, probs, {"q_values": scores})
