"""Cooperating agents learning with RLlib's own DQN / PPO learners (discrete actions:
EMERALD-O's "aug" and "opt", document 004's optimizer choice) and SAC learners (Box actions:
document 002's five HYPERA agents).

RLlib's new API stack is used piecewise, without an `Algorithm` or env loop: a local
`LearnerGroup` (``num_learners=0``, no Ray cluster needed) owns the trainable `MultiRLModule`,
its optimizers and RLlib's DQN/PPO losses; an inference-only copy of the module picks actions.
Every `observe()` call becomes one self-contained one-step `MultiAgentEpisode`, because in
EMERALD-O a decision's reward arrives later, from a Ray Tune trial, in any order. DQN replays
those episodes through a `MultiAgentEpisodeReplayBuffer` (SAC too); PPO keeps them until the
next update.

Pitfalls handled here (RLlib 2.60):

* `LearnerGroup.update()` mutates the episodes it gets (PPO appends one timestep to each),
  so every update builds fresh episodes from plain stored transitions.
* PPO's GAE connector standardises advantages over all rows, including that appended
  artificial timestep; with one-step episodes this biases every advantage upwards and policies
  collapse. `_OneStepPPOLearner` re-standardises over the real rows only.
* `Learner.set_state()` skips the weights when the incoming ``weights_seq_no`` is not newer
  than its own; `set_state()` drops that counter so that a restore always loads the weights.
* Sets of module ids (``policies={...}``, the replay buffer's default `modules_to_sample`,
  PPO's per-module shuffle) make module init and sampling depend on PYTHONHASHSEED; ordered
  lists and our own shuffle keep runs reproducible across processes.
* SAC: RLlib 2.60's Learner state leaves out the learned temperature (`curr_log_alpha`), so
  `get_state` saves it and `set_state` fills it back in place; SACConfig's actor rate
  defaults to 3e-5 and its buffer to the prioritised one, so both are set. The squashed
  Gaussian is sampled here from [mean, log_std] (log_std clamped to [-5, 2] as RLlib does).
* `config.debugging(seed=...)` makes the Learner seed the *global* random/numpy/torch RNGs
  (and set cuDNN/cuBLAS determinism flags) of the host process. Instead, all RLlib work runs
  inside private numpy/torch RNG streams seeded from `LearnerSettings.seed`, so runs are
  reproducible and the caller's global RNG state is left untouched. Because those streams are
  swapped into the process-global RNGs, a learner must be used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.utils.metrics import (
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)
from ray.rllib.utils.replay_buffers.multi_agent_episode_buffer import (
    MultiAgentEpisodeReplayBuffer,
)

__all__ = ["AgentSpec", "Decision", "LearnerSettings", "MultiAgentLearner"]

_ALGOS = ("dqn", "ppo", "sac")
_REPLAY_ALGOS = ("dqn", "sac")
# Keys of `Decision.extra` that PPO's loss reads from the episodes' extra_model_outputs.
_PPO_EXTRA_KEYS = (Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS)
# Learner state entry that makes `Learner.set_state()` skip "older" weights.
_WEIGHTS_SEQ_NO = "weights_seq_no"
_STATE_VERSION = 1


@dataclass(frozen=True)
class AgentSpec:
    """One agent's interface: a flat float observation and a discrete action set, or for
    SAC a Box action in [-1, 1]^action_dim (`n_actions` unused) with its own initial
    temperature (document 002: each agent's "exploration temperature")."""

    obs_dim: int
    n_actions: int = 0
    action_dim: int = 0
    temperature: float | None = None  # SAC's initial alpha (None: the settings')


@dataclass(frozen=True)
class LearnerSettings:
    """Hyperparameters of both agents' learners (EMERALD-O sections 4.3.2/4.4.2 defaults)."""

    algo: str = "dqn"  # "dqn" | "ppo"
    hidden: tuple[int, ...] = (64, 32)  # MLP hidden sizes, ReLU (both Q-net and PPO nets)
    lr: float = 1e-3
    gamma: float = 0.0  # one-step bandit-style decisions by default; >0 for chained steps
    batch_size: int = 32  # DQN replay sample size per agent / PPO minibatch and rollout size
    replay_capacity: int = 10_000  # DQN replay capacity in env steps
    learning_starts: int = 8  # DQN: transitions before the first update
    updates_per_step: int = 1  # DQN: gradient steps (replay samples) per `update()` call
    seed: int = 0
    # Additions beyond EMERALD-O's list, all with defaults tuned for a few hundred steps:
    ppo_epochs: int = 32  # PPO: passes (gradient steps) over each collected batch
    ppo_entropy_coeff: float = 0.01  # PPO: keeps the categorical from collapsing early
    ppo_clip: float = 0.2  # PPO: surrogate clip range
    target_tau: float = 0.05  # DQN: Polyak factor of the target-net update after each step
    torch_threads: int | None = 1  # `torch.set_num_threads` for the host process; None: keep
    # Settings document 004 needs (defaults keep EMERALD-O's behaviour):
    activation: str = "relu"  # hidden activation ("tanh": document 004's PPO nets)
    lr_vf: float | None = None  # PPO: own Adam rate for the critic (None: one optimizer, `lr`)
    td_loss: str = "huber"  # DQN: "huber" (RLlib's default) or "mse" (document 004)
    double_q: bool = True  # DQN: double-Q targets (document 004: plain max over the target)
    target_update_freq: int = 1  # DQN: env steps between target updates (1 with Polyak tau)
    # SAC (document 002; `lr` is the actor's, critic's and temperature's rate, `target_tau`
    # the Polyak factor, `batch_size` / `replay_capacity` / `learning_starts` /
    # `updates_per_step` as for DQN):
    initial_alpha: float = 1.0
    twin_q: bool = True


@dataclass
class Decision:
    """One agent's action for one observation, with what its learner needs later (SAC:
    the action vector in [-1, 1], `probs` empty, `extra["mean"]` its deterministic
    action)."""

    action: Any  # int; SAC: np.ndarray of float32
    probs: np.ndarray  # behaviour distribution the action was drawn from (see `act`)
    extra: dict[str, Any] = field(default_factory=dict)  # PPO: action_logp, action_dist_inputs


@dataclass
class _Transition:
    """One decision step of all acting agents, kept as plain picklable numpy data."""

    obs: dict[str, np.ndarray]
    actions: dict[str, Any]
    rewards: dict[str, float]
    next_obs: dict[str, np.ndarray]
    terminated: bool
    extra: dict[str, dict[str, np.ndarray]]
    key: str | None = None  # transitions of one key follow each other: one PPO episode


def _agent_to_module(agent_id: str, *args: Any, **kwargs: Any) -> str:
    """Each agent has its own module of the same name (module-level, hence picklable)."""
    return agent_id


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """RLlib 2.60 logs two deprecation warnings about its own internals each time a learner
    group is built (one per cell and restore): kept out of the user's console."""
    import logging

    logger = logging.getLogger("ray._common.deprecation")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _RngStreams:
    """Private numpy-global and torch RNG streams, swapped in only while RLlib code runs."""

    def __init__(self, seed: int) -> None:
        saved_np, saved_torch = np.random.get_state(), torch.random.get_rng_state()
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.np_state: Any = np.random.get_state()
        self.torch_state: torch.Tensor = torch.random.get_rng_state()
        np.random.set_state(saved_np)
        torch.random.set_rng_state(saved_torch)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the block on the private streams, then restore the caller's RNG state."""
        saved_np, saved_torch = np.random.get_state(), torch.random.get_rng_state()
        np.random.set_state(self.np_state)
        torch.random.set_rng_state(self.torch_state)
        try:
            yield
        finally:
            self.np_state = np.random.get_state()
            self.torch_state = torch.random.get_rng_state()
            np.random.set_state(saved_np)
            torch.random.set_rng_state(saved_torch)


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
        (document 004 3.2.2.3: LR_pi 3e-4, LR_v 1e-3); RLlib's default is one for both."""
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


class MultiAgentLearner:
    """EMERALD-O's "aug" and "opt" agents: act on observations, learn from delayed rewards.

    Uses RLlib's `DQNTorchLearner` / `PPOTorchLearner` through a local `LearnerGroup`; no
    `ray.init()` is needed, and an already initialised Ray is fine too.
    """

    def __init__(self, agents: dict[str, AgentSpec], settings: LearnerSettings) -> None:
        if settings.algo not in _ALGOS:
            raise ValueError(f"algo must be one of {_ALGOS}, got {settings.algo!r}")
        if not agents:
            raise ValueError("need at least one agent")
        for aid, spec in agents.items():
            box = settings.algo == "sac"
            if spec.obs_dim < 1 or (spec.action_dim < 1 if box else spec.n_actions < 2):
                need = "action_dim >= 1" if box else "n_actions >= 2"
                raise ValueError(f"agent {aid!r}: need obs_dim >= 1 and {need}")
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        self.agents = dict(agents)
        self.settings = settings
        self._spaces = {
            aid: (
                gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32),
                gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
                if settings.algo == "sac" else gym.spaces.Discrete(spec.n_actions),
            )
            for aid, spec in self.agents.items()
        }
        self._rng = _RngStreams(settings.seed)
        with _quiet_deprecations():
            config = self._make_config()
        with self._rng.active(), _quiet_deprecations():
            self._learner_group = config.build_learner_group(spaces=self._spaces)
            self._module = config.get_multi_rl_module_spec(
                spaces=self._spaces, inference_only=True
            ).build()
        self._sync_weights()
        self._buffer: MultiAgentEpisodeReplayBuffer | None = None
        if settings.algo in _REPLAY_ALGOS:
            self._buffer = MultiAgentEpisodeReplayBuffer(
                capacity=settings.replay_capacity, batch_size_B=settings.batch_size
            )
            self._buffer.rng = np.random.default_rng(settings.seed)
        self._pending: list[_Transition] = []  # PPO: on-policy steps since the last update
        self._env_steps = 0
        self._agent_steps = 0
        self._num_updates = 0

    # ------------------------------------------------------------------ configuration
    def _make_config(self) -> Any:
        """Build the RLlib AlgorithmConfig whose learner class and loss settings are used."""
        s = self.settings
        if s.algo == "sac":
            return self._sac_config()
        if s.algo == "dqn":
            from ray.rllib.algorithms.dqn import DQNConfig

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
        else:
            from ray.rllib.algorithms.ppo import PPOConfig

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
        return (
            config.framework("torch")
            .environment(observation_space=None, action_space=None)
            .multi_agent(
                # An ordered collection, not a set: module build order (and with it which
                # torch RNG draws initialise which module) must not depend on PYTHONHASHSEED.
                policies=list(self.agents),
                policy_mapping_fn=_agent_to_module,
            )
            .rl_module(
                model_config={
                    "fcnet_hiddens": list(s.hidden),
                    "fcnet_activation": s.activation,
                }
            )
            .learners(num_learners=0, num_gpus_per_learner=0)
        )

    def _sac_config(self) -> Any:
        """RLlib's SAC on Box actions: one actor, twin critics and a learned temperature
        per agent, each agent starting from its own alpha (per-module overrides)."""
        from ray.rllib.algorithms.sac import SACConfig

        s = self.settings
        config = SACConfig().training(
            # SACConfig's own actor rate is 3e-5: every rate is set (document 002: 3e-4).
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
        return (
            config.framework("torch")
            .environment(observation_space=None, action_space=None)
            .multi_agent(policies=list(self.agents), policy_mapping_fn=_agent_to_module,
                         algorithm_config_overrides_per_module=overrides)
            .rl_module(model_config={
                "fcnet_hiddens": hidden, "fcnet_activation": s.activation,
                "fusionnet_hiddens": hidden[-1:], "fusionnet_activation": s.activation,
                "head_fcnet_hiddens": []})
            .learners(num_learners=0, num_gpus_per_learner=0)
        )

    # ------------------------------------------------------------------ acting
    def _obs_tensor(self, aid: str, obs: np.ndarray) -> torch.Tensor:
        arr = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        if arr.shape[1] != self.agents[aid].obs_dim:
            raise ValueError(f"agent {aid!r}: obs has {arr.shape[1]} values, "
                             f"expected {self.agents[aid].obs_dim}")
        return torch.from_numpy(arr)

    @torch.no_grad()
    def _scores(self, aid: str, obs: np.ndarray) -> np.ndarray:
        """Q-values (DQN) or action logits (PPO) of the inference module for one obs."""
        module = self._module[aid]
        batch = {Columns.OBS: self._obs_tensor(aid, obs)}
        if self.settings.algo == "dqn":
            out = module.compute_q_values(batch)["qf_preds"]
        else:
            out = module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]
        return out[0].numpy().astype(np.float64)

    def act(
        self,
        obs: dict[str, np.ndarray],
        *,
        epsilon: float,
        rng: np.random.Generator,
        greedy: bool = False,
    ) -> dict[str, Decision]:
        """Choose an action per agent in `obs`, drawing all randomness from `rng`.

        DQN: epsilon-greedy on the Q-values; `probs` is that epsilon-greedy distribution and
        `extra["q_values"]` the raw Q-values. PPO: a sample from the categorical policy
        (`epsilon` is ignored); `probs` is softmax(logits). `greedy=True` takes the argmax
        for either algorithm (and makes DQN ignore `epsilon`).
        """
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        decisions: dict[str, Decision] = {}
        for aid in obs:
            if self.settings.algo == "sac":
                decisions[aid] = self._act_box(aid, obs[aid], rng, greedy)
                continue
            scores = self._scores(aid, obs[aid])
            n = scores.shape[0]
            best = int(np.argmax(scores))
            if self.settings.algo == "dqn":
                eps = 0.0 if greedy else float(epsilon)
                probs = np.full(n, eps / n)
                probs[best] += 1.0 - eps
                action = int(rng.integers(n)) if eps > 0 and rng.random() < eps else best
                decisions[aid] = Decision(action, probs, {"q_values": scores})
            else:
                logp_all = scores - np.logaddexp.reduce(scores)
                probs = np.exp(logp_all)
                probs /= probs.sum()
                action = best if greedy else int(rng.choice(n, p=probs))
                extra = {
                    Columns.ACTION_LOGP: np.float32(logp_all[action]),
                    Columns.ACTION_DIST_INPUTS: scores.astype(np.float32),
                }
                decisions[aid] = Decision(action, probs, extra)
        return decisions

    def _act_box(self, aid: str, obs: np.ndarray, rng: np.random.Generator,
                 greedy: bool) -> Decision:
        """SAC's squashed Gaussian: tanh(mean + std * noise), the noise from `rng`; the
        greedy action is tanh(mean). RLlib's dist inputs are [mean, log_std], log_std
        clamped to [-5, 2] as its `TorchSquashedGaussian` does."""
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

    def q_values(self, aid: str, obs: np.ndarray, actions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """SAC: both critics' estimates Q1(obs, a), Q2(obs, a) for each row of `actions`
        (K x action_dim, in [-1, 1]); the learner's own module (the acting copy has no
        critics)."""
        if self.settings.algo != "sac":
            raise ValueError("q_values needs algo 'sac'")
        module = self._learner_group._learner.module[aid].unwrapped()
        acts = torch.as_tensor(np.asarray(actions, np.float32).reshape(
            -1, self.agents[aid].action_dim))
        obs_t = self._obs_tensor(aid, obs).expand(acts.shape[0], -1)
        batch = {Columns.OBS: obs_t, Columns.ACTIONS: acts}
        with torch.no_grad():
            q1 = module._qf_forward_train_helper(batch, module.qf_encoder, module.qf)
            q2 = module._qf_forward_train_helper(batch, module.qf_twin_encoder,
                                                 module.qf_twin) if module.twin_q else q1
        return (q1.reshape(-1).numpy().astype(np.float64),
                q2.reshape(-1).numpy().astype(np.float64))

    def temperature(self, aid: str) -> float:
        """SAC: an agent's current entropy coefficient alpha."""
        return float(torch.exp(self._learner_group._learner.curr_log_alpha[aid]).item())

    def greedy(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Each agent's argmax action (max Q for DQN, most likely action for PPO; SAC:
        tanh of the policy mean)."""
        if self.settings.algo == "sac":
            rng = np.random.default_rng(0)
            return {aid: self._act_box(aid, o, rng, True).action for aid, o in obs.items()}
        return {aid: int(np.argmax(self._scores(aid, o))) for aid, o in obs.items()}

    # ------------------------------------------------------------------ learning
    def observe(
        self,
        obs: dict[str, np.ndarray],
        decisions: dict[str, Decision],
        reward: float | dict[str, float],
        next_obs: dict[str, np.ndarray],
        terminated: bool = True,
        key: str | None = None,
    ) -> None:
        """Record one decision step of the agents in `decisions` and its (delayed) reward.

        `reward` is shared by all agents or given per agent. `terminated=False` stores the step
        as truncated, so the learners bootstrap from `next_obs` (TD(0) with `gamma`). Steps
        with the same `key` (a trial) follow one another: PPO learns from them as one
        multi-step episode (GAE over the chain, bootstrapped where the chain is cut), DQN
        replays them one by one.
        """
        aids = list(decisions)
        unknown = set(aids) - set(self.agents)
        if unknown:
            raise KeyError(f"unknown agents {sorted(unknown)}")
        rewards = (
            {aid: float(reward[aid]) for aid in aids}
            if isinstance(reward, dict)
            else dict.fromkeys(aids, float(reward))
        )
        step = _Transition(
            obs={aid: np.asarray(obs[aid], np.float32).reshape(-1).copy() for aid in aids},
            actions={aid: self._action(aid, decisions[aid].action) for aid in aids},
            rewards=rewards,
            next_obs={
                aid: np.asarray(next_obs[aid], np.float32).reshape(-1).copy() for aid in aids
            },
            terminated=bool(terminated),
            extra={
                aid: {
                    k: np.asarray(decisions[aid].extra[k], np.float32)
                    for k in _PPO_EXTRA_KEYS
                    if k in decisions[aid].extra
                }
                for aid in aids
            },
            key=key,
        )
        if self.settings.algo == "ppo":
            missing = [a for a in aids if len(step.extra[a]) != len(_PPO_EXTRA_KEYS)]
            if missing:
                raise ValueError(f"PPO decisions of {missing} lack {_PPO_EXTRA_KEYS}; "
                                 "use decisions returned by act()")
        self._env_steps += 1
        self._agent_steps += len(aids)
        if self._buffer is not None:
            self._buffer.add([self._episode([step])])
        else:
            self._pending.append(step)

    def _action(self, aid: str, action: Any) -> Any:
        """An action as stored: an int, or SAC's float32 vector clipped to [-1, 1]."""
        if self.settings.algo != "sac":
            return int(action)
        vec = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        if vec.shape != (self.agents[aid].action_dim,):
            raise ValueError(f"agent {aid!r}: action of shape {vec.shape}, expected "
                             f"({self.agents[aid].action_dim},)")
        return vec

    def _episode(self, steps: list[_Transition]) -> MultiAgentEpisode:
        """A fresh MultiAgentEpisode holding consecutive `steps` (numpy-ised, like
        EnvRunners'): done after the last one, terminated or truncated (bootstrapped)."""
        aids = list(steps[0].actions)
        episode = MultiAgentEpisode(
            observation_space=gym.spaces.Dict({a: self._spaces[a][0] for a in aids}),
            action_space=gym.spaces.Dict({a: self._spaces[a][1] for a in aids}),
            agent_module_ids={a: a for a in aids},
            agent_to_module_mapping_fn=_agent_to_module,
        )
        episode.add_env_reset(observations=dict(steps[0].obs))
        # Only the "__all__" key: a MultiAgentEpisode whose agents are *all* flagged done
        # individually declares itself terminated, even when they were all truncated.
        flag = {"__all__": True}
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            episode.add_env_step(
                observations=dict(step.next_obs),
                actions=dict(step.actions),
                rewards=dict(step.rewards),
                terminateds=flag if last and step.terminated else {},
                truncateds=flag if last and not step.terminated else {},
                extra_model_outputs={a: dict(step.extra[a]) for a in aids},
            )
        return episode.to_numpy()

    def _chains(self) -> list[list[_Transition]]:
        """The pending PPO steps as episodes, in the order their first steps came: the steps
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

    def _timesteps(self) -> dict[str, int]:
        return {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self._env_steps,
            NUM_AGENT_STEPS_SAMPLED_LIFETIME: self._agent_steps,
        }

    def update(self, flush: bool = False) -> dict[str, float]:
        """Run learner updates if there is enough data, then refresh the acting module.

        DQN: `updates_per_step` replay samples of `batch_size` per agent once the buffer
        holds `learning_starts` steps. PPO: once `batch_size` steps are pending (or any, with
        `flush`: an episode ended), `ppo_epochs` passes over all of them in one minibatch
        (`updates_per_step` is not used), then they are dropped. Returns
        `{"<agent>/loss": ..., ...}` of the last pass, or {} if nothing was done.
        """
        s = self.settings
        results: list[dict[str, Any]] = []
        with self._rng.active():
            if self._buffer is not None:
                if self._buffer.get_num_timesteps() < max(1, s.learning_starts):
                    return {}
                modules = set(self._buffer.get_module_ids())
                for _ in range(s.updates_per_step):
                    episodes = self._buffer.sample(
                        num_items=s.batch_size,
                        n_step=1,
                        gamma=s.gamma,
                        # Explicit order; the default is a set (hash-seed dependent draws).
                        modules_to_sample=[a for a in self.agents if a in modules],
                    )
                    results = self._learner_group.update(
                        episodes=episodes, timesteps=self._timesteps()
                    )
            else:
                if not self._pending or (len(self._pending) < s.batch_size and not flush):
                    return {}
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
        self._num_updates += 1
        self._sync_weights()
        return self._flatten(results[0] if results else {})

    def _flatten(self, result: dict[str, Any]) -> dict[str, float]:
        """Per-agent scalar metrics (loss and a few algorithm-specific ones) as floats."""
        keys = {
            "loss": Learner.TOTAL_LOSS_KEY,
            "qf_mean": "qf_mean",
            "td_error_mean": "td_error_mean",
            "policy_loss": "policy_loss",
            "vf_loss": "vf_loss",
            "entropy": "entropy",
            "qf_loss": "qf_loss",
            "alpha": "alpha_value",
        }
        flat: dict[str, float] = {}
        for aid in self.agents:
            stats = result.get(aid, {})
            for name, key in keys.items():
                if key in stats:
                    value = stats[key]
                    value = value.peek() if hasattr(value, "peek") else value
                    flat[f"{aid}/{name}"] = float(np.asarray(value, dtype=np.float64))
        return flat

    def _sync_weights(self) -> None:
        """Copy the learner's current weights into the inference-only acting module."""
        self._module.set_state(self._learner_group.get_weights())

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """Picklable snapshot: weights, target nets, optimizer state, replay, counters, RNGs."""
        learner = self._learner_group.get_state(
            not_components="learner/metrics_logger"
        )
        log_alpha = None
        if self.settings.algo == "sac":  # not part of RLlib 2.60's Learner state
            log_alpha = {a: float(self._learner_group._learner.curr_log_alpha[a].detach()[0])
                         for a in self.agents}
        return {
            "version": _STATE_VERSION,
            "algo": self.settings.algo,
            "agents": self._signature(),
            "log_alpha": log_alpha,
            "learner_group": learner,
            "buffer": None if self._buffer is None else self._buffer.get_state(),
            "buffer_rng": None if self._buffer is None else self._buffer.rng.bit_generator.state,
            "pending": copy.deepcopy(self._pending),
            "env_steps": self._env_steps,
            "agent_steps": self._agent_steps,
            "num_updates": self._num_updates,
            "rng_np": self._rng.np_state,
            "rng_torch": self._rng.torch_state.clone(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a `get_state()` snapshot taken from a learner with the same agents/algo."""
        agents = self._signature()
        if state.get("algo") != self.settings.algo or state.get("agents") != agents:
            raise ValueError("state comes from a learner with other agents or algorithm")
        learner = dict(state["learner_group"]["learner"])
        learner.pop(_WEIGHTS_SEQ_NO, None)  # else "older" weights would be skipped
        with self._rng.active():
            self._learner_group.set_state({"learner": learner})
        if state.get("log_alpha"):
            with torch.no_grad():  # in place: the temperature's Adam holds this tensor
                for aid, value in state["log_alpha"].items():
                    self._learner_group._learner.curr_log_alpha[aid].fill_(value)
        if self._buffer is not None:
            self._buffer = MultiAgentEpisodeReplayBuffer(
                capacity=self.settings.replay_capacity, batch_size_B=self.settings.batch_size
            )
            # A copy: RLlib's buffer adopts the state's lists, which a snapshot taken in this
            # process still shares with the buffer it came from.
            self._buffer.set_state(copy.deepcopy(state["buffer"]))
            # RLlib 2.60's set_state rebuilds this counter as defaultdict(list): a module first
            # sampled after a restore then fails with "'int' object is not iterable".
            self._buffer.sampled_timesteps_per_module = defaultdict(
                int, dict(self._buffer.sampled_timesteps_per_module))
            self._buffer.rng = np.random.default_rng()
            self._buffer.rng.bit_generator.state = state["buffer_rng"]
        self._pending = copy.deepcopy(state["pending"])
        self._env_steps = int(state["env_steps"])
        self._agent_steps = int(state["agent_steps"])
        self._num_updates = int(state["num_updates"])
        self._rng.np_state = state["rng_np"]
        self._rng.torch_state = state["rng_torch"].clone()
        self._sync_weights()

    def get_weights(self) -> dict[str, Any]:
        """Each agent's network weights (DQN's target network among them), as numpy: what a
        warm start carries over, without optimizer state, replay buffer or counters."""
        weights = self._learner_group.get_weights()
        return {aid: {k: np.asarray(v).copy() for k, v in weights[aid].items()}
                for aid in self.agents}

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Start from `get_weights()` of a learner with the same agents (each agent's layer
        shapes must match); the optimizers, buffer and counters stay as they are (fresh)."""
        mine = self._learner_group.get_weights()
        for aid in self.agents:
            if aid not in weights:
                raise ValueError(f"the weights have no agent {aid!r}")
            shapes = {k: np.shape(v) for k, v in mine[aid].items()}
            theirs = {k: np.shape(v) for k, v in weights[aid].items()}
            if shapes != theirs:
                raise ValueError(f"agent {aid!r}: layer shapes {theirs} differ from {shapes}")
        with self._rng.active():
            self._learner_group.set_weights({aid: weights[aid] for aid in self.agents})
        self._sync_weights()

    def _signature(self) -> dict[str, tuple[int, int]]:
        """Each agent's (obs_dim, actions): what a saved state must match."""
        return {a: (s.obs_dim, s.action_dim if self.settings.algo == "sac" else s.n_actions)
                for a, s in self.agents.items()}

    @property
    def num_steps(self) -> int:
        """Decision steps observed so far (env steps)."""
        return self._env_steps

    @property
    def replay_size(self) -> int:
        """Env steps currently held in the DQN replay buffer (0 for PPO)."""
        return 0 if self._buffer is None else self._buffer.get_num_timesteps()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as agents + settings + get_state(): Tune pickles searchers (tuner.pkl) and
        RLlib's LearnerGroup does not survive pickling whole (its Prometheus histograms lose
        their default tags, and the first update after unpickling raises)."""
        return {"agents": self.agents, "settings": self.settings, "state": self.get_state()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["agents"], state["settings"])
        self.set_state(state["state"])

    def stop(self) -> None:
        """Release the LearnerGroup (and its Learner); the object is unusable afterwards."""
        self._learner_group.shutdown()
