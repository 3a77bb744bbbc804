"""Factories of HYPERA's entries (`hypera`, `hypera-search`)."""

from __future__ import annotations

from service.core.api import ControllerPlan, SearcherPlan


def _random_starts(budget, options: dict) -> dict:
    """At most a quarter of the trial budget starts from random points (5 of 20 by
    default), at least one, so the agents act in short runs too."""
    return {**options, "random_starts": min(options["random_starts"],
                                            max(1, budget.trials // 4))}


def hypera(*, space, metric, mode, seed, budget, step_epochs: int, **options
           ) -> ControllerPlan:
    """HYPERA's agents inside running trials (`budget.trials` trials)."""
    return ControllerPlan("hypera", budget.trials, budget.epochs,
                          controller="rllib_policies.hypera._agents:HyperaController",
                          controller_options=_random_starts(budget, options),
                          step_epochs=step_epochs)


def hypera_search(*, space, metric, mode, seed, budget, **options) -> SearcherPlan:
    """HYPERA's agents as a searcher: one decision per agent per trial."""
    from rllib_policies.hypera._agents import HyperaSearch

    searcher = HyperaSearch(space, seed=seed, max_epochs=budget.epochs, metric=metric,
                            mode=mode, **_random_starts(budget, options))
    return SearcherPlan("hypera-search", budget.trials, budget.epochs, searcher=searcher)
