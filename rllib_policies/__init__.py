"""Decisions by RL agents: EMERALD-O's two agents on RLlib learners, as a Tune searcher
(`emerald`, one step per trial) and as an in-trial `Controller` (`emerald-dynamic`, one step
every k epochs); Iranfar et al.'s and Vashishtha's tabular Q-learning searchers (`LayerwiseSearch`,
`AdaptiveQSearch`) and HYPERA's `HyperaSearch` (and `HyperaController`). The searchers
(`EmeraldSearch` too, with `names` mapping a space's names to its agents' roles) also work as
drop-in searchers of a user's own `tune.Tuner`: built without a space, they take Tune's
param_space (docs/drop-in.md). Their registry entries are in `rllib_policies.entries`.

Importing this package is cheap; the classes load RLlib and Ray Tune when first used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "EmeraldController": "rllib_policies.emerald._controller",
    "EmeraldSearch": "rllib_policies.emerald._search",
    "EmeraldSettings": "rllib_policies.emerald._encoding",
    "RewardSettings": "rllib_policies.emerald._encoding",
    "AdaptiveQSearch": "rllib_policies.tabular._adaptive_q",
    "LayerwiseSearch": "rllib_policies.tabular._layerwise",
    "HyperaSearch": "rllib_policies.hypera._agents",
    "HyperaController": "rllib_policies.hypera._agents",
    "WarmStartError": "rllib_policies.emerald._warm",
    "load_agents": "rllib_policies.emerald._warm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rllib_policies' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
