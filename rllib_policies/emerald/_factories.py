"""Factories of EMERALD-O's entries (`emerald`, `emerald-dynamic`; declared in `entries.py`)."""

from __future__ import annotations

import math
from typing import Any

from service.core.api import ControllerPlan, SearcherPlan

ASHA_GRACE = 1
ASHA_REDUCTION = 3
"""EMERALD-O 5.1.2's early stopping as ASHA: rungs at 1, 3, 9, ... epochs, a third going
on from each (the paper gives no schedule)."""


def asha_mean_epochs(max_t: int, grace: int, reduction: int) -> float:
    """Expected epochs of one trial under ASHA when results are exchangeable: every trial
    reaches the grace period, a 1/reduction share of those at a rung goes on to the next
    (grace * reduction^k below max_t), the rest stop; survivors of the last rung train to
    max_t."""
    rungs = [grace]
    while rungs[-1] * reduction < max_t:
        rungs.append(rungs[-1] * reduction)
    stops = [*rungs, max_t] if rungs[-1] < max_t else rungs
    mean, share = float(stops[0]), 1.0
    for before, after in zip(stops, stops[1:], strict=False):
        share /= reduction
        mean += share * (after - before)
    return mean


PAPER_VARIANT: dict[str, Any] = {
    "aug_actions": "table4", "lr_head": "continuous", "epsilon": "decay", "acc_scale": "points",
    "low_acc_floor": 0.5, "low_acc_penalty": 1.0, "early_stopping": True}
"""`variant: paper`: the paper's own settings where the default departs from them: Table 4's
four actions, section 4.4.2's linear rate head, 5.1.1's decay 0.01, Fig 6's reward in
points, 4.6.1's low-accuracy penalty (the paper gives no floor or weight: below 50%
accuracy, 1 per unit, is ours) and 5.1.2's early stopping (for emerald-dynamic too)."""


def resolve_variant(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options with `variant`'s values put in where an option is at its default (an
    option given explicitly, at another value, wins)."""
    from service.core import registry

    options = dict(options)
    if options.pop("variant", "") != "paper":
        return options
    defaults = {k: o.default for k, o in registry.entry(name).options.items()}
    for key, value in PAPER_VARIANT.items():
        if key in options and options[key] == defaults.get(key):
            options[key] = value
    return options


SETTINGS_KEYS = ("algo", "combine", "epsilon_decay", "epsilon", "epsilon_lambda",
                 "epsilon_fraction", "warm_start", "epsilon_start", "aug_actions", "lr_head",
                 "w1", "w2", "acc_scale", "low_acc_floor", "low_acc_penalty")
"""The registry options that become EmeraldSettings (both modes)."""


def emerald(*, space, metric, mode, seed, budget, **options) -> SearcherPlan:
    from ray.tune.schedulers import ASHAScheduler

    from rllib_policies.emerald._encoding import EmeraldSettings
    from rllib_policies.emerald._search import EmeraldSearch

    options = resolve_variant("emerald", options)
    stopping = options["early_stopping"] and budget.epochs > 1
    # One decision per trial: the budget schedule spans the trials the budget affords (with
    # early stopping, the epoch budget over ASHA's mean epochs per trial).
    decisions = math.ceil(budget.epoch_budget / asha_mean_epochs(
        budget.epochs, ASHA_GRACE, ASHA_REDUCTION)) if stopping else budget.trials
    settings = EmeraldSettings.from_options(
        **{k: options[k] for k in SETTINGS_KEYS}, decisions=decisions)
    searcher = EmeraldSearch(space, metric=metric, mode=mode, seed=seed, settings=settings,
                             max_epochs=budget.epochs)
    if not stopping:
        return SearcherPlan("emerald", budget.trials, budget.epochs, searcher=searcher)
    # EMERALD-O 5.1.2: configurations that keep underperforming stop early; the searcher
    # counts a stopped trial as a penalty. The epochs they leave go to more trials, until
    # the budget's total epochs are spent (as the multi-fidelity entries do).
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                              grace_period=ASHA_GRACE, reduction_factor=ASHA_REDUCTION,
                              metric=metric, mode=mode)
    return SearcherPlan("emerald", budget.fidelity_trials, budget.epochs, scheduler,
                        budget.epoch_budget, searcher=searcher)


def emerald_dynamic(*, space, metric, mode, seed, budget, step_epochs: int,
                    early_stopping: bool, patience: int, **options) -> ControllerPlan:

    options = resolve_variant("emerald-dynamic", {**options, "early_stopping": early_stopping})
    stopping = options.pop("early_stopping") and budget.epochs > patience
    # A decision every step_epochs epochs of every trial: the budget schedule spans them
    # (with early stopping, as many as the epoch budget affords at that step length).
    steps = -(-budget.epochs // step_epochs)
    decisions = budget.epoch_budget // step_epochs if stopping else budget.trials * steps
    controller_options = {**{k: options[k] for k in SETTINGS_KEYS}, "decisions": decisions}
    if not stopping:
        return ControllerPlan(
            "emerald-dynamic", budget.trials, budget.epochs,
            controller="rllib_policies.emerald._controller:EmeraldController",
            controller_options=controller_options, step_epochs=step_epochs)
    # EMERALD-O 5.1.2 inside trials: one that stopped improving ends; the epoch budget
    # stopper ends the experiment once the budget's epochs are spent.
    return ControllerPlan(
        "emerald-dynamic", budget.fidelity_trials, budget.epochs, None, budget.epoch_budget,
        patience=patience, controller="rllib_policies.emerald._controller:EmeraldController",
        controller_options=controller_options, step_epochs=step_epochs)
