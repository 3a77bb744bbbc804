"""The RL methods' registry entries, gathered from their folders in registry order:
EMERALD-O (`emerald/`), Pham's optimizer selection (`optsel/`), tabular Q-learning
(`tabular/`: Vashishtha's adaptive-q, Iranfar et al.'s layerwise) and HYPERA (`hypera/`)."""

from __future__ import annotations

from rllib_policies.emerald.entries import ENTRIES as _EMERALD
from rllib_policies.hypera.entries import ENTRIES as _HYPERA
from rllib_policies.optsel.entries import ENTRIES as _OPTSEL
from rllib_policies.tabular.entries import ENTRIES as _TABULAR
from service.core.registry import Entry

ENTRIES: list[Entry] = [*_EMERALD, *_OPTSEL, *_TABULAR, *_HYPERA]
