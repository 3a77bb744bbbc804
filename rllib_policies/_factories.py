"""Factories of the RL entries (declared in `rllib_policies/entries.py`)."""

from __future__ import annotations

from service.api import ControllerPlan, SearcherPlan


def emerald(*, space, metric, mode, seed, budget, algo: str, combine: str,
            epsilon_decay: float, early_stopping: bool) -> SearcherPlan:
    from ray.tune.schedulers import ASHAScheduler

    from rllib_policies._encoding import EmeraldSettings
    from rllib_policies._search import EmeraldSearch

    settings = EmeraldSettings.from_options(algo=algo, combine=combine,
                                            epsilon_decay=epsilon_decay)
    searcher = EmeraldSearch(space, metric=metric, mode=mode, seed=seed, settings=settings,
                             max_epochs=budget.epochs)
    # EMERALD-O 5.1.2: configurations that keep underperforming stop early; the searcher
    # counts a stopped trial as a penalty.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                              grace_period=1, reduction_factor=3, metric=metric, mode=mode
                              ) if early_stopping and budget.epochs > 1 else None
    return SearcherPlan("emerald", budget.trials, budget.epochs, scheduler, searcher=searcher)


def emerald_dynamic(*, space, metric, mode, seed, budget, algo: str, combine: str,
                    epsilon_decay: float, step_epochs: int) -> ControllerPlan:
    return ControllerPlan(
        "emerald-dynamic", budget.trials, budget.epochs,
        controller="rllib_policies._controller:EmeraldController",
        controller_options={"algo": algo, "combine": combine, "epsilon_decay": epsilon_decay},
        step_epochs=step_epochs)
