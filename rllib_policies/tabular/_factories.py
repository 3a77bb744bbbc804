"""Factories of the tabular Q-learning entries (`adaptive-q`, `layerwise`)."""

from __future__ import annotations

from service.core.api import SearcherPlan


def adaptive_q(*, space, metric, mode, seed, budget, points: int, alpha: float, gamma: float,
               k0: float, lam: float, eps_max: float, eps_min: float) -> SearcherPlan:
    """Vashishtha's tabular Q-learning walk over the grid, one configuration per trial."""
    from rllib_policies.tabular._adaptive_q import AdaptiveQSearch

    searcher = AdaptiveQSearch(space, seed=seed, points=points, alpha=alpha, gamma=gamma,
                               k0=k0, lam=lam, eps_max=eps_max, eps_min=eps_min,
                               metric=metric, mode=mode)
    return SearcherPlan("adaptive-q", budget.trials, budget.epochs, searcher=searcher)


def layerwise(*, space, metric, mode, seed, budget, points: int, c_acc: float,
              size_ref_mb: float, gamma: float, epsilon_decay: float,
              exploration_episodes: int, compound_alpha: bool, auto_epochs: bool,
              min_epochs: int, update: str) -> SearcherPlan:
    """Iranfar et al.'s layer-wise agents, one trial per episode."""
    from rllib_policies.tabular._layerwise import LayerwiseSearch

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
