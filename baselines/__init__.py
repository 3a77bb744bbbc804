"""Searchers and schedulers other than the RL agents, behind one registry by name.

`build(name, space=..., metric=..., mode=..., seed=..., budget=...)` returns a `SearchPlan`;
`check_name` and `check_options` validate without importing any searcher library.
"""

from baselines._registry import (
    ENTRIES,
    Entry,
    RegistryError,
    SearchPlan,
    available,
    build,
    check_name,
    check_options,
)

__all__ = [
    "ENTRIES",
    "Entry",
    "RegistryError",
    "SearchPlan",
    "available",
    "build",
    "check_name",
    "check_options",
]
