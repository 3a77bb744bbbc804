"""EMERALD-O's RL agents (RLlib) and their Tune adapters.

`EmeraldSearch` runs the two agents as a Tune Searcher (one step per trial);
`ControllerSearch` / `EmeraldController` run them inside running trials (one step every k
epochs). Both are registry entries (`emerald`, `emerald-dynamic`) beside the baselines.
"""

from rllib_policies._controller import ControllerSearch, EmeraldController
from rllib_policies._encoding import RewardSettings
from rllib_policies._search import EmeraldSearch, EmeraldSettings

__all__ = [
    "ControllerSearch",
    "EmeraldController",
    "EmeraldSearch",
    "EmeraldSettings",
    "RewardSettings",
]
