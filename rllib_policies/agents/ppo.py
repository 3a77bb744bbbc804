"""PPO agents (EMERALD-O's PPO variant; Pham's PPO optimizer selector): RLlib's PPO
loss on categorical policies, actions sampled from the policy, learning on-policy from the
steps pending since the last update (a trial's steps as one episode).

PPO's GAE connector standardises advantages over all rows, including the artificial timestep
RLlib appends to every episode; with one-step episodes this biases every advantage upwards
and policies collapse. `_OneStepPPOLearner` re-standardises over the real rows only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

from rllib_policies.agents.base import (
    PPO_EXTRA_KEYS,
    Decision,
    MultiAgentLearner,
    _Transition,
    module_config,
)


class _StandardizeRealAdvantages(ConnectorV2):
    """Re-standardise PPO advantages over the real (loss-masked-in) rows only.

    RLlib's `GeneralAdvantageEstimation` standardises over all rows, including the artificial
    timestep `AddOneTsToEpisodesAndTruncate` appends to every episode. With one-step episodes
    half the rows are artificial (advantage -V(s)), which shifts every real advantage upwards
    and turns PPO into "reinforce whatever was sampled": policies collapse on small batches.
    """

    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        for module_batch in batch.values():
            if Columns.ADVANTAGES not in module_batch or Columns.LOSS_MASK not in module_batch:
                continue
            adv = module_batch[Columns.ADVANTAGES]
            real = adv[module_batch[Columns.LOSS_MASK]]
            if real.numel() == 0:
                continue
            std = real.std(unbiased=False) if real.numel() > 1 else real.new_tensor(0.0)
            module_batch[Columns.ADVANTAGES] = (adv - real.mean()) / torch.clamp(std, min=1e-4)
        return batch


class _OneStepPPOLearner(PPOTorchLearner):
    """RLlib's torch PPO learner, with advantages standardised over real timesteps only, and
    (with `learner_config_dict["lr_vf"]`) separate Adam optimizers for actor and critic."""

    def build(self) -> None:
        """Build as PPO does, then append the re-standardisation after GAE."""
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.append(_StandardizeRealAdvantages())

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """One Adam for the policy's parameters at `lr`, one for the critic's at `lr_vf`
        (Pham 2024 3.2.2.3: LR_pi 3e-4, LR_v 1e-3); RLlib's default is one for both."""
        lr_vf = (config.learner_config_dict or {}).get("lr_vf") if config else None
        if lr_vf is None:
            super().configure_optimizers_for_module(module_id, config)
            return
        module = self._module[module_id]
        critic, actor = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            is_critic = name.startswith(("vf.", "encoder.critic_encoder."))
            (critic if is_critic else actor).append(param)
        for name, params, lr in (("pi", actor, config.lr), ("vf", critic, lr_vf)):
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params), params=params,
                                    lr_or_lr_schedule=lr)


class PPOLearner(MultiAgentLearner):
    """Categorical policies per agent; `act` samples them (`epsilon` is not used)."""

    algo = "ppo"

    def _make_config(self) -> Any:
        from ray.rllib.algorithms.ppo import PPOConfig

        s = self.settings
        config = PPOConfig().training(
            lr=s.lr,
            gamma=s.gamma,
            lambda_=0.95,
            train_batch_size=s.batch_size,
            minibatch_size=s.batch_size,
            num_epochs=s.ppo_epochs,
            clip_param=s.ppo_clip,
            entropy_coeff=s.ppo_entropy_coeff,
            # With its own critic optimizer the value loss is the plain squared error.
            vf_loss_coeff=0.5 if s.lr_vf is None else 1.0,
            vf_clip_param=10.0 if s.lr_vf is None else float("inf"),
            # The adaptive KL coefficient is Learner state that `get_state()` omits.
            use_kl_loss=False,
            grad_clip=1.0,
        ).learners(learner_class=_OneStepPPOLearner,
                   learner_config_dict={"lr_vf": s.lr_vf})
        return module_config(config, list(self.agents),
                             {"fcnet_hiddens": list(s.hidden),
                              "fcnet_activation": s.activation})

    def _module_scores(self, module: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Action logits."""
        return module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]

    def _decide(self, aid: str, obs: np.ndarray, epsilon: float, rng: np.random.Generator,
                greedy: bool) -> Decision:
        """A sample of the categorical policy (`greedy`: its most likely action); `probs`
        is softmax(logits), `extra` what PPO's loss reads back."""
        scores = self._scores(aid, obs)
        n = scores.shape[0]
        best = int(np.argmax(scores))
        logp_all = scores - np.logaddexp.reduce(scores)
        probs = np.exp(logp_all)
        probs /= probs.sum()
        action = best if greedy else int(rng.choice(n, p=probs))
        extra = {
            Columns.ACTION_LOGP: np.float32(logp_all[action]),
            Columns.ACTION_DIST_INPUTS: scores.astype(np.float32),
        }
        return Decision(action, probs, extra)

    def _check_step(self, step: _Transition) -> None:
        missing = [a for a in step.actions if len(step.extra[a]) != len(PPO_EXTRA_KEYS)]
        if missing:
            raise ValueError(f"PPO decisions of {missing} lack {PPO_EXTRA_KEYS}; "
                             "use decisions returned by act()")

    def _chains(self) -> list[list[_Transition]]:
        """The pending steps as episodes, in the order their first steps came: the steps
        of one key in order, cut after a terminated one; steps without a key alone."""
        chains: list[list[_Transition]] = []
        open_by_key: dict[str, list[_Transition]] = {}
        for step in self._pending:
            chain = open_by_key.get(step.key) if step.key is not None else None
            if chain is None:
                chain = []
                chains.append(chain)
                if step.key is not None:
                    open_by_key[step.key] = chain
            chain.append(step)
            if step.terminated and step.key is not None:
                open_by_key.pop(step.key)
        return chains

    def _learn(self, flush: bool) -> list[dict[str, Any]] | None:
        """Once `batch_size` steps are pending (or any, with `flush`: an episode ended),
        `ppo_epochs` passes over all of them in one minibatch, then they are dropped
        (`updates_per_step` is not used)."""
        s = self.settings
        if not self._pending or (len(self._pending) < s.batch_size and not flush):
            return None
        # Shuffle once with our own stream: RLlib's per-epoch shuffle draws from the
        # global numpy RNG per module in (hash-seed dependent) set order.
        chains = self._chains()
        chains = [chains[i] for i in np.random.permutation(len(chains))]
        # One minibatch of everything pending. PPO's learner connector appends one
        # masked timestep to every episode: an episode of n steps is n + 1 rows.
        minibatch = len(self._pending) + len(chains)
        results = self._learner_group.update(
            episodes=[self._episode(c) for c in chains],
            timesteps=self._timesteps(),
            num_epochs=s.ppo_epochs,
            minibatch_size=minibatch,
            shuffle_batch_per_epoch=False,
        )
        self._pending.clear()
        return results
