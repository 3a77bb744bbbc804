"""RL agents behind one protocol (`MultiAgentLearner`: act, observe, update, state), one
class per algorithm on RLlib's learners: `DQNLearner`, `PPOLearner`, `SACLearner`.
`make_learner` picks the class `LearnerSettings.algo` names. RLlib's private API is reached
only in `rllib_compat`."""

from __future__ import annotations

from rllib_policies.agents.base import (
    ALGOS,
    AgentSpec,
    Decision,
    LearnerSettings,
    MultiAgentLearner,
)
from rllib_policies.agents.dqn import DQNLearner
from rllib_policies.agents.ppo import PPOLearner
from rllib_policies.agents.sac import SACLearner

LEARNERS: dict[str, type[MultiAgentLearner]] = {
    "dqn": DQNLearner, "ppo": PPOLearner, "sac": SACLearner}


def make_learner(agents: dict[str, AgentSpec], settings: LearnerSettings) -> MultiAgentLearner:
    """The learner of `settings.algo` for `agents`."""
    if settings.algo not in LEARNERS:
        raise ValueError(f"algo must be one of {ALGOS}, got {settings.algo!r}")
    return LEARNERS[settings.algo](agents, settings)


__all__ = ["ALGOS", "AgentSpec", "DQNLearner", "Decision", "LearnerSettings", "LEARNERS",
           "MultiAgentLearner", "PPOLearner", "SACLearner", "make_learner"]
