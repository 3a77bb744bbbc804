"""Every reach into RLlib's private API, in one place, for the RLlib this project pins
(the Ray release service.backends.tune.ray_compat checks on import): another RLlib is
refused here, where its breakage would show, instead of failing somewhere inside an update.

What is reached and why:
* the local learner of a `LearnerGroup` (``num_learners=0``): SAC's learned temperature
  (`curr_log_alpha`) is not part of its state, and its critics are read for `q_values`;
* a SAC module's critic forward (`_qf_forward_train_helper`), which RLlib has no public
  call for;
* the Learner state's ``weights_seq_no``, which makes `set_state` skip "older" weights;
* the episode replay buffer's per-module counter, which RLlib 2.60's `set_state` rebuilds
  with the wrong default.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from service.backends.tune.ray_compat import TESTED_RAY  # noqa: F401 - checks the version

WEIGHTS_SEQ_NO = "weights_seq_no"
"""Learner state entry that makes `Learner.set_state()` skip weights it deems older."""


def local_learner(group: Any) -> Any:
    """The Learner a local `LearnerGroup` (``num_learners=0``) holds."""
    return group._learner


def log_alpha(group: Any) -> dict[str, Any]:
    """SAC's learned log-temperature per module (a tensor the temperature's Adam holds)."""
    return local_learner(group).curr_log_alpha


def critic_values(module: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """A SAC module's twin critics Q1, Q2 on `batch` (Q1 twice without a twin)."""
    q1 = module._qf_forward_train_helper(batch, module.qf_encoder, module.qf)
    q2 = module._qf_forward_train_helper(batch, module.qf_twin_encoder,
                                         module.qf_twin) if module.twin_q else q1
    return q1, q2


def fix_sampled_counter(buffer: Any) -> None:
    """RLlib 2.60's `MultiAgentEpisodeReplayBuffer.set_state` rebuilds this counter as
    defaultdict(list): a module first sampled after a restore then fails with "'int' object
    is not iterable"."""
    buffer.sampled_timesteps_per_module = defaultdict(
        int, dict(buffer.sampled_timesteps_per_module))
