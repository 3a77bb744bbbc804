"""The agent protocol every RL method here uses, and what DQN, PPO and SAC share: agents act
on observations (`act`), record decision steps whose rewards arrive later (`observe`), learn
(`update`) and save and restore everything (`get_state` / `set_state`). One class per
algorithm implements it (`DQNLearner`, `PPOLearner`, `SACLearner`); `make_learner` picks
by `LearnerSettings.algo`.

RLlib's new API stack is used piecewise, without an `Algorithm` or env loop: a local
`LearnerGroup` (``num_learners=0``, no Ray cluster needed) owns the trainable `MultiRLModule`,
its optimizers and RLlib's losses; an inference-only copy of the module picks actions.
Every `observe()` call becomes one self-contained one-step `MultiAgentEpisode`, because in
EMERALD-O a decision's reward arrives later, from a Ray Tune trial, in any order. DQN and SAC
replay those episodes through a `MultiAgentEpisodeReplayBuffer`; PPO keeps them until the
next update.

Pitfalls handled here (RLlib 2.60; its private API is reached only in `rllib_compat`):

* `LearnerGroup.update()` mutates the episodes it gets (PPO appends one timestep to each),
  so every update builds fresh episodes from plain stored transitions.
* `Learner.set_state()` skips the weights when the incoming ``weights_seq_no`` is not newer
  than its own; `set_state()` drops that counter so that a restore always loads the weights.
* Sets of module ids (``policies={...}``, the replay buffer's default `modules_to_sample`,
  PPO's per-module shuffle) make module init and sampling depend on PYTHONHASHSEED; ordered
  lists and our own shuffle keep runs reproducible across processes.
* `config.debugging(seed=...)` makes the Learner seed the *global* random/numpy/torch RNGs
  (and set cuDNN/cuBLAS determinism flags) of the host process. Instead, all RLlib work runs
  inside private numpy/torch RNG streams seeded from `LearnerSettings.seed`, so runs are
  reproducible and the caller's global RNG state is left untouched. Because those streams are
  swapped into the process-global RNGs, a learner must be used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
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

from rllib_policies.agents import rllib_compat

ALGOS = ("dqn", "ppo", "sac")
# Keys of `Decision.extra` that PPO's loss reads from the episodes' extra_model_outputs.
PPO_EXTRA_KEYS = (Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS)
_STATE_VERSION = 1


@dataclass(frozen=True)
class AgentSpec:
    """One agent's interface: a flat float observation and a discrete action set, or for
    SAC a Box action in [-1, 1]^action_dim (`n_actions` unused) with its own initial
    temperature (HYPERA: each agent's "exploration temperature")."""

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
    # Settings Pham 2024 needs (defaults keep EMERALD-O's behaviour):
    activation: str = "relu"  # hidden activation ("tanh": Pham's PPO nets)
    lr_vf: float | None = None  # PPO: own Adam rate for the critic (None: one optimizer, `lr`)
    td_loss: str = "huber"  # DQN: "huber" (RLlib's default) or "mse" (Pham 2024)
    double_q: bool = True  # DQN: double-Q targets (Pham 2024: plain max over the target)
    target_update_freq: int = 1  # DQN: env steps between target updates (1 with Polyak tau)
    # SAC (HYPERA; `lr` is the actor's, critic's and temperature's rate, `target_tau`
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


def module_config(config: Any, agents: list[str], model_config: dict[str, Any],
                  **multi_agent: Any) -> Any:
    """What every algorithm's RLlib config shares: torch, one module per agent (an ordered
    list, not a set: module build order, and with it which torch RNG draws initialise which
    module, must not depend on PYTHONHASHSEED), the MLP, and one local learner."""
    return (
        config.framework("torch")
        .environment(observation_space=None, action_space=None)
        .multi_agent(policies=list(agents), policy_mapping_fn=_agent_to_module,
                     **multi_agent)
        .rl_module(model_config=model_config)
        .learners(num_learners=0, num_gpus_per_learner=0)
    )


class MultiAgentLearner:
    """The agent protocol: cooperating agents that act on observations and learn from
    delayed rewards, on one of RLlib's learners through a local `LearnerGroup` (no
    `ray.init()` needed; an initialised Ray is fine too). Subclasses fill in what their
    algorithm does differently: its config, its actions, how it learns from what it saw."""

    algo: str = ""
    uses_replay = False  # replay buffer (DQN, SAC), else the pending on-policy steps (PPO)

    def __init__(self, agents: dict[str, AgentSpec], settings: LearnerSettings) -> None:
        if settings.algo != self.algo:
            raise ValueError(f"{type(self).__name__} runs algo {self.algo!r}, the settings "
                             f"say {settings.algo!r}; use make_learner")
        if not agents:
            raise ValueError("need at least one agent")
        for aid, spec in agents.items():
            self._check_spec(aid, spec)
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        self.agents = dict(agents)
        self.settings = settings
        self._spaces = {
            aid: (gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32),
                  self._action_space(spec))
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
        if self.uses_replay:
            self._buffer = MultiAgentEpisodeReplayBuffer(
                capacity=settings.replay_capacity, batch_size_B=settings.batch_size
            )
            self._buffer.rng = np.random.default_rng(settings.seed)
        self._pending: list[_Transition] = []  # PPO: on-policy steps since the last update
        self._env_steps = 0
        self._agent_steps = 0
        self._num_updates = 0

    # ------------------------------------------------------------------ per algorithm
    def _make_config(self) -> Any:
        """The RLlib AlgorithmConfig whose learner class and loss settings are used."""
        raise NotImplementedError

    def _check_spec(self, aid: str, spec: AgentSpec) -> None:
        """Discrete actions: at least two of them."""
        if spec.obs_dim < 1 or spec.n_actions < 2:
            raise ValueError(f"agent {aid!r}: need obs_dim >= 1 and n_actions >= 2")

    def _action_space(self, spec: AgentSpec) -> gym.Space:
        return gym.spaces.Discrete(spec.n_actions)

    def _action_count(self, spec: AgentSpec) -> int:
        return spec.n_actions

    def _action(self, aid: str, action: Any) -> Any:
        """An action as stored: an int (SAC: a float32 vector)."""
        return int(action)

    def _decide(self, aid: str, obs: np.ndarray, epsilon: float, rng: np.random.Generator,
                greedy: bool) -> Decision:
        raise NotImplementedError

    def _learn(self, flush: bool) -> list[dict[str, Any]] | None:
        """The learner updates the data allows (inside the private RNG streams); None when
        there is not enough yet."""
        raise NotImplementedError

    def _check_step(self, step: _Transition) -> None:
        """What an algorithm needs of a stored step beyond the actions (PPO: log-probs)."""

    def _extra_state(self) -> dict[str, Any] | None:
        """Learner state RLlib's own leaves out (SAC: the learned temperatures)."""
        return None

    def _restore_extra(self, state: dict[str, Any]) -> None:
        """Put `_extra_state`'s part of a snapshot back."""

    # ------------------------------------------------------------------ acting
    def _obs_tensor(self, aid: str, obs: np.ndarray) -> torch.Tensor:
        arr = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        if arr.shape[1] != self.agents[aid].obs_dim:
            raise ValueError(f"agent {aid!r}: obs has {arr.shape[1]} values, "
                             f"expected {self.agents[aid].obs_dim}")
        return torch.from_numpy(arr)

    def act(
        self,
        obs: dict[str, np.ndarray],
        *,
        epsilon: float,
        rng: np.random.Generator,
        greedy: bool = False,
    ) -> dict[str, Decision]:
        """Choose an action per agent in `obs`, drawing all randomness from `rng`; each
        algorithm says how (`DQNLearner`: epsilon-greedy; `PPOLearner`: a sample of its
        policy, `epsilon` ignored; `SACLearner`: its squashed Gaussian). `greedy=True`
        takes the best action."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        return {aid: self._decide(aid, obs[aid], epsilon, rng, greedy) for aid in obs}

    def greedy(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Each agent's best action (discrete: the largest score, `_scores`)."""
        return {aid: int(np.argmax(self._scores(aid, o))) for aid, o in obs.items()}

    @torch.no_grad()
    def _scores(self, aid: str, obs: np.ndarray) -> np.ndarray:
        """The acting module's action scores for one observation (`_module_scores`)."""
        batch = {Columns.OBS: self._obs_tensor(aid, obs)}
        return self._module_scores(self._module[aid], batch)[0].numpy().astype(np.float64)

    def _module_scores(self, module: Any, batch: dict[str, Any]) -> torch.Tensor:
        """A discrete algorithm's scores per action (Q-values, logits) for `batch`."""
        raise NotImplementedError

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
        and SAC replay them one by one.
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
                    for k in PPO_EXTRA_KEYS
                    if k in decisions[aid].extra
                }
                for aid in aids
            },
            key=key,
        )
        self._check_step(step)
        self._env_steps += 1
        self._agent_steps += len(aids)
        if self._buffer is not None:
            self._buffer.add([self._episode([step])])
        else:
            self._pending.append(step)

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

    def _timesteps(self) -> dict[str, int]:
        return {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self._env_steps,
            NUM_AGENT_STEPS_SAMPLED_LIFETIME: self._agent_steps,
        }

    def update(self, flush: bool = False) -> dict[str, float]:
        """Run learner updates if there is enough data (each algorithm says when and how),
        then refresh the acting module. Returns `{"<agent>/loss": ..., ...}` of the last
        pass, or {} if nothing was done."""
        with self._rng.active():
            results = self._learn(flush)
        if results is None:
            return {}
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
        return {
            "version": _STATE_VERSION,
            "algo": self.settings.algo,
            "agents": self._signature(),
            "log_alpha": self._extra_state(),
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
        learner.pop(rllib_compat.WEIGHTS_SEQ_NO, None)  # else "older" weights are skipped
        with self._rng.active():
            self._learner_group.set_state({"learner": learner})
        if state.get("log_alpha"):
            self._restore_extra(state)
        if self._buffer is not None:
            self._buffer = MultiAgentEpisodeReplayBuffer(
                capacity=self.settings.replay_capacity, batch_size_B=self.settings.batch_size
            )
            # A copy: RLlib's buffer adopts the state's lists, which a snapshot taken in this
            # process still shares with the buffer it came from.
            self._buffer.set_state(copy.deepcopy(state["buffer"]))
            rllib_compat.fix_sampled_counter(self._buffer)
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
        return {a: (s.obs_dim, self._action_count(s)) for a, s in self.agents.items()}

    @property
    def num_steps(self) -> int:
        """Decision steps observed so far (env steps)."""
        return self._env_steps

    @property
    def replay_size(self) -> int:
        """Env steps currently held in the replay buffer (0 for PPO)."""
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


class ReplayLearner(MultiAgentLearner):
    """What DQN and SAC share: decision steps replayed from a buffer, `updates_per_step`
    samples of `batch_size` per agent once it holds `learning_starts` steps."""

    uses_replay = True

    def _learn(self, flush: bool) -> list[dict[str, Any]] | None:
        s = self.settings
        assert self._buffer is not None
        if self._buffer.get_num_timesteps() < max(1, s.learning_starts):
            return None
        modules = set(self._buffer.get_module_ids())
        results: list[dict[str, Any]] = []
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
        return results
