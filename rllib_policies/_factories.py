"""Factories of the RL entries (declared in `rllib_policies/entries.py`)."""

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

    from rllib_policies._encoding import EmeraldSettings
    from rllib_policies._search import EmeraldSearch

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
            controller="rllib_policies._controller:EmeraldController",
            controller_options=controller_options, step_epochs=step_epochs)
    # EMERALD-O 5.1.2 inside trials: one that stopped improving ends; the epoch budget
    # stopper ends the experiment once the budget's epochs are spent.
    return ControllerPlan(
        "emerald-dynamic", budget.fidelity_trials, budget.epochs, None, budget.epoch_budget,
        patience=patience, controller="rllib_policies._controller:EmeraldController",
        controller_options=controller_options, step_epochs=step_epochs)


def optsel(*, space, metric, mode, seed, budget, algo: str, optimizers: str, lr_sgd: float,
           lr_sam: float, lr_adam: float, w_acc: float, w_loss: float, w_time: float,
           w_final: float, step_epochs: int, patience: int, epsilon_decay: float = 0.995,
           learning_starts: int = 32) -> ControllerPlan:
    """Pham's per-epoch optimizer choice: `budget.trials` trials (episodes) of
    `budget.epochs` epochs; the controller sets the optimizer and its own rate."""
    from rllib_policies._optsel import DEFAULT_LR, parse_optimizers

    names = parse_optimizers(optimizers)
    rates = {**DEFAULT_LR, "sgd": lr_sgd, "sam": lr_sam, "adam": lr_adam}
    options = {"algo": algo, "optimizers": optimizers, "lr_sgd": lr_sgd, "lr_sam": lr_sam,
               "lr_adam": lr_adam, "w_acc": w_acc, "w_loss": w_loss, "w_time": w_time,
               "w_final": w_final}
    if algo == "dqn":
        options.update(epsilon_decay=epsilon_decay, learning_starts=learning_starts)
    controls = {"optimizer": {"choice": list(names)},
                "lr": {"choice": sorted({float(rates[n]) for n in names})}}
    return ControllerPlan(
        f"optsel-{algo}", budget.trials, budget.epochs, patience=patience,
        controller="rllib_policies._optsel:OptimizerSelector", controller_options=options,
        step_epochs=step_epochs, controls=controls)


def optsel_dqn(**kwargs) -> ControllerPlan:
    return optsel(algo="dqn", **kwargs)


def optsel_ppo(**kwargs) -> ControllerPlan:
    return optsel(algo="ppo", **kwargs)


def adaptive_q(*, space, metric, mode, seed, budget, points: int, alpha: float, gamma: float,
               k0: float, lam: float, eps_max: float, eps_min: float) -> SearcherPlan:
    """Vashishtha's tabular Q-learning walk over the grid, one configuration per trial."""
    from rllib_policies._adaptive_q import AdaptiveQSearch

    searcher = AdaptiveQSearch(space, seed=seed, points=points, alpha=alpha, gamma=gamma,
                               k0=k0, lam=lam, eps_max=eps_max, eps_min=eps_min,
                               metric=metric, mode=mode)
    return SearcherPlan("adaptive-q", budget.trials, budget.epochs, searcher=searcher)


def layerwise(*, space, metric, mode, seed, budget, points: int, c_acc: float,
              size_ref_mb: float, gamma: float, epsilon_decay: float,
              exploration_episodes: int, compound_alpha: bool, auto_epochs: bool,
              min_epochs: int, update: str) -> SearcherPlan:
    """Iranfar et al.'s layer-wise agents, one trial per episode."""
    from rllib_policies._layerwise import LayerwiseSearch

    plan_searcher = LayerwiseSearch(space, seed=seed, points=points, c_acc=c_acc,
                                    size_ref_mb=size_ref_mb, gamma=gamma,
                                    epsilon_decay=epsilon_decay,
                                    exploration_episodes=exploration_episodes or None,
                                    compound=compound_alpha, auto_epochs=auto_epochs,
                                    min_epochs=min_epochs, literal=update == "literal",
                                    metric=metric, mode=mode)
    if auto_epochs:  # shorter episodes: as many as the same total epochs afford
        return SearcherPlan("layerwise", budget.fidelity_trials, budget.epochs, None,
                            budget.epoch_budget, searcher=plan_searcher)
    return SearcherPlan("layerwise", budget.trials, budget.epochs, searcher=plan_searcher)


def _random_starts(budget, options: dict) -> dict:
    """At most a quarter of the trial budget starts from random points (5 of 20 by
    default), at least one, so the agents act in short runs too."""
    return {**options, "random_starts": min(options["random_starts"],
                                            max(1, budget.trials // 4))}


def hypera(*, space, metric, mode, seed, budget, step_epochs: int, **options
           ) -> ControllerPlan:
    """HYPERA's agents inside running trials (`budget.trials` trials)."""
    return ControllerPlan("hypera", budget.trials, budget.epochs,
                          controller="rllib_policies._hypera:HyperaController",
                          controller_options=_random_starts(budget, options),
                          step_epochs=step_epochs)


def hypera_search(*, space, metric, mode, seed, budget, **options) -> SearcherPlan:
    """HYPERA's agents as a searcher: one decision per agent per trial."""
    from rllib_policies._hypera import HyperaSearch

    searcher = HyperaSearch(space, seed=seed, max_epochs=budget.epochs, metric=metric,
                            mode=mode, **_random_starts(budget, options))
    return SearcherPlan("hypera-search", budget.trials, budget.epochs, searcher=searcher)
