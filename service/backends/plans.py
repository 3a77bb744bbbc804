"""Building a registry entry's plan for one cell: the entry's factory over a space, seed and
budget, its searcher wrapped in the result guard both backends rely on. The registry itself
(service.core.registry) only declares entries; what they build needs Ray Tune."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.backends.tune.searching import ResultGuard
from service.core import registry
from service.core.api import Budget, Plan, SearcherPlan
from service.core.objectives import OBJECTIVE_COLUMN, Objectives, search_target
from service.core.space import SearchSpace


def build(name: str, *, space: SearchSpace, metric: str, mode: str, seed: int,
          budget: Budget, options: Mapping[str, Any] | None = None,
          objectives: Objectives | None = None) -> Plan:
    """Build the plan of entry `name` over `space` for one seed and budget. With
    `objectives`, a native multi-objective entry gets their metric and mode lists and any
    other entry the scalarised `objective` (`search_target`); `plan.metric` and
    `plan.mode` say which, for the controller host and the simulator."""
    opts = registry.check_options(name, options or {}, space)
    entry = registry.entry(name)
    factory = entry.load_factory()
    metric, mode = search_target(objectives, entry.multi_objective, metric, mode)
    plan = factory(space=space, metric=metric, mode=mode, seed=seed, budget=budget, **opts)
    expected = registry.PLAN_KINDS[registry.entry(name).kind]
    if not isinstance(plan, expected):
        raise TypeError(f"{name}: factory returned {type(plan).__name__}, its entry declares "
                        f"{expected.__name__}")
    if isinstance(plan, SearcherPlan):
        plan.searcher = ResultGuard(plan.searcher)
    plan.param_space = {**space.constants, **plan.param_space}
    plan.seed = seed
    plan.metric, plan.mode = metric, mode
    if isinstance(getattr(plan.scheduler, "metric", None), list) or isinstance(
            getattr(plan.scheduler, "_metric", None), list):
        raise TypeError(f"{name}: its scheduler was given several metrics; a scheduler "
                        f"compares one (give it {OBJECTIVE_COLUMN!r})")
    return plan
