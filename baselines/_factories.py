"""Factories of the baseline entries (declared in `baselines/entries.py`): each turns the
shared `SearchSpace`, a seed and an equal budget into a plan. Outside libraries are imported
inside the factories, so declaring the entries stays cheap."""

from __future__ import annotations

import math
from typing import Any

from service.core.api import Budget, PopulationPlan, SearcherPlan
from service.core.space import LOG10_PREFIX, OPTIMIZER_LR, Dim, SearchSpace


def plain_plan(name: str, searcher: Any, budget: Budget, scheduler: Any = None) -> SearcherPlan:
    """One config per trial, `budget.trials` trials of `budget.epochs` epochs."""
    return SearcherPlan(name, budget.trials, budget.epochs, scheduler, searcher=searcher)


def random(*, space, metric, mode, seed, budget, **_: Any) -> SearcherPlan:
    from baselines._simple import RandomSearch

    return plain_plan("random", RandomSearch(space, seed=seed, metric=metric, mode=mode), budget)


def grid(*, space, metric, mode, seed, budget, points: int, shuffle: bool) -> SearcherPlan:
    from baselines._simple import GridSearch

    searcher = GridSearch(space, points=points, shuffle=shuffle, seed=seed, metric=metric,
                          mode=mode)
    plan = plain_plan("grid", searcher, budget)
    plan.num_samples = min(budget.trials, searcher.size)
    return plan


def optuna(*, space, metric, mode, seed, budget, n_startup_trials: int) -> SearcherPlan:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from service.backends.tune.spaces import to_tune

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    searcher = OptunaSearch(space=OptunaSearch.convert_search_space(to_tune(space)),
                            metric=metric, mode=mode, sampler=sampler)
    return plain_plan("optuna", searcher, budget)


def _optuna_multi(name: str) -> Any:
    """A native multi-objective Optuna entry: `metric` and `mode` are lists (the
    experiment's objectives; Ray's `OptunaSearch` then runs a study of several
    directions). `scheduler: asha` stops trials early on the scalarised `objective`, as a
    scheduler compares one metric."""

    def factory(*, space, metric, mode, seed, budget, scheduler: str,
                **sampler_options: int) -> SearcherPlan:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from service.backends.tune.spaces import to_tune
        from service.core.objectives import OBJECTIVE_COLUMN

        if name == "optuna-nsga2":
            sampler: Any = optuna.samplers.NSGAIISampler(seed=seed, **sampler_options)
        else:  # Optuna's TPE is MOTPE (Ozaki et al. 2020) on a study of several directions
            sampler = optuna.samplers.TPESampler(seed=seed, **sampler_options)
        searcher = OptunaSearch(space=OptunaSearch.convert_search_space(to_tune(space)),
                                metric=metric, mode=mode, sampler=sampler)
        if scheduler == "none":
            return plain_plan(name, searcher, budget)
        from ray.tune.schedulers import ASHAScheduler

        several = isinstance(metric, list)
        one_metric, one_mode = (OBJECTIVE_COLUMN, "max") if several else (metric, mode)
        stopper = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                                grace_period=1, metric=one_metric, mode=one_mode)
        return SearcherPlan(name, budget.fidelity_trials, budget.epochs, stopper,
                            budget.epoch_budget, searcher=searcher)

    return factory


optuna_nsga2 = _optuna_multi("optuna-nsga2")
optuna_motpe = _optuna_multi("optuna-motpe")


def hyperopt(*, space, metric, mode, seed, budget, n_initial_points: int) -> SearcherPlan:
    from ray.tune.search.hyperopt import HyperOptSearch

    from service.backends.tune.spaces import to_tune

    searcher = HyperOptSearch(
        space=HyperOptSearch.convert_search_space(to_tune(space)), metric=metric, mode=mode,
        random_state_seed=seed,
        n_initial_points=n_initial_points,
    )
    return plain_plan("hyperopt", searcher, budget)


def _gp(acq_func: str, name: str) -> Any:
    def factory(*, space, metric, mode, seed, budget, n_initial_points: int) -> SearcherPlan:
        from baselines._skopt import SkOptSearch

        searcher = SkOptSearch(space, acq_func=acq_func, n_initial_points=n_initial_points,
                               seed=seed, metric=metric, mode=mode)
        return plain_plan(name, searcher, budget)

    return factory


skopt = _gp("EI", "skopt")
spearmint = _gp("PI", "spearmint")


def ax(*, space, metric, mode, seed, budget) -> SearcherPlan:
    from ray.tune.search.ax import AxSearch

    from service.backends.tune.spaces import to_tune

    searcher = AxSearch(space=AxSearch.convert_search_space(to_tune(space)), metric=metric,
                        mode=mode, random_seed=seed, verbose_logging=False)
    return plain_plan("ax", searcher, budget)


def largest_bracket(max_t: int, eta: int) -> int:
    """Trials in the largest bracket of synchronous HyperBand (Tune's HyperBandScheduler).

    Synchronous HyperBand pauses each trial at a rung until its whole bracket arrives, and
    Tune's concurrency limit counts paused trials as live: with a cap below the bracket size
    the bracket never fills and HyperBand stops nothing (measured: 6 of 6 trials ran to
    max_t). So these plans raise the cap to this size; paused trials hold no CPU or GPU.
    """
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    return max(math.ceil(s_max_1 / (s + 1) * eta**s) for s in range(s_max_1))


def bohb(*, space, metric, mode, seed, budget, reduction_factor: int) -> SearcherPlan:
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    from service.backends.tune.spaces import to_tune

    searcher = TuneBOHB(space=TuneBOHB.convert_search_space(to_tune(space)), metric=metric,
                        mode=mode, seed=seed)
    scheduler = HyperBandForBOHB(time_attr="training_iteration", max_t=budget.epochs,
                                 reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearcherPlan("bohb", budget.fidelity_trials, budget.epochs, scheduler,
                        budget.epoch_budget,
                        min_concurrency=largest_bracket(budget.epochs, reduction_factor),
                        searcher=searcher)


def hyperband(*, space, metric, mode, seed, budget, reduction_factor: int) -> SearcherPlan:
    from ray.tune.schedulers import HyperBandScheduler

    from baselines._simple import RandomSearch

    scheduler = HyperBandScheduler(time_attr="training_iteration", max_t=budget.epochs,
                                   reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearcherPlan("hyperband", budget.fidelity_trials, budget.epochs, scheduler,
                        budget.epoch_budget,
                        min_concurrency=largest_bracket(budget.epochs, reduction_factor),
                        searcher=RandomSearch(space, seed=seed, metric=metric, mode=mode))


def asha(*, space, metric, mode, seed, budget, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler

    from baselines._simple import RandomSearch

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                              grace_period=min(grace_period, budget.epochs),
                              reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearcherPlan("asha", budget.fidelity_trials, budget.epochs, scheduler,
                        budget.epoch_budget,
                        searcher=RandomSearch(space, seed=seed, metric=metric, mode=mode))


def _population(space: SearchSpace, seed: int, population: int) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(population)]


def _population_epochs(budget: Budget, population: int) -> int:
    return max(1, budget.epoch_budget // population)


def pbt(*, space, metric, mode, seed, budget, population: int, perturbation_interval: int,
         quantile_fraction: float, resample_probability: float) -> SearcherPlan:
    from ray.tune.schedulers import PopulationBasedTraining

    from service.backends.tune.spaces import to_tune

    population = min(population, budget.epoch_budget)
    domains = to_tune(space)
    # PBT perturbs a Domain by multiplying it; categorical values must be given as lists,
    # which PBT shifts to a neighbouring choice instead. The architecture is not mutated: an
    # exploiting trial keeps its donor's, whose weights it loads.
    mutations = {d.name: list(d.choices) if d.kind == "choice" else domains[d.name]
                 for d in space.in_trial}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric=metric, mode=mode,
        perturbation_interval=perturbation_interval, hyperparam_mutations=mutations,
        quantile_fraction=quantile_fraction, resample_probability=resample_probability,
        synch=False,
    )
    # The population must live side by side to exploit one another (one slot would train
    # the members one after another: random search).
    return PopulationPlan("pbt", population, _population_epochs(budget, population), scheduler,
                          min_concurrency=population, param_space=domains,
                          initial_configs=_population(space, seed, population))


def pb2_space(space: SearchSpace) -> SearchSpace:
    """The space PB2 explores: log ranges become uniform ranges of `log10_<name>`."""
    dims = []
    for d in space.dims:
        if d.kind == "loguniform":
            dims.append(Dim(LOG10_PREFIX + d.name, "uniform", (), math.log10(d.low),
                            math.log10(d.high)))
        else:
            dims.append(d)
    return SearchSpace(tuple(dims))


def pb2(*, space, metric, mode, seed, budget, population: int,
         perturbation_interval: int) -> SearcherPlan:
    from ray.tune.schedulers.pb2 import PB2

    from service.backends.tune.spaces import to_tune

    population = min(population, budget.epoch_budget)
    log_space = pb2_space(space)
    bounds = space.to_pb2_bounds()  # non-empty: baselines.entries checks it at validation
    scheduler = PB2(time_attr="training_iteration", metric=metric, mode=mode,
                    perturbation_interval=perturbation_interval, hyperparam_bounds=bounds,
                    synch=False)
    return PopulationPlan("pb2", population, _population_epochs(budget, population), scheduler,
                          min_concurrency=population, param_space=to_tune(log_space),
                          initial_configs=_population(log_space, seed, population))


def fixed(*, space, metric, mode, seed, budget, optimizer: str, lr: float | None,
          patience: int, repeats: int) -> SearcherPlan:
    from baselines._simple import FixedSearch

    config = {"optimizer": optimizer, "lr": OPTIMIZER_LR[optimizer] if lr is None else lr}
    searcher = FixedSearch(config, repeats=repeats, metric=metric, mode=mode)
    plan = plain_plan("fixed", searcher, budget)
    plan.num_samples, plan.patience = repeats, patience
    return plan


def trivialaugment(*, space, metric, mode, seed, budget, optimizer: str, lr: float,
                   repeats: int) -> SearcherPlan:
    from baselines._simple import FixedSearch

    config = {"trivialaugment": True, "flip": False, "rotation": 0, "shift": False,
              "zoom": False, "optimizer": optimizer, "lr": lr}
    searcher = FixedSearch(config, repeats=repeats, metric=metric, mode=mode)
    plan = plain_plan("trivialaugment", searcher, budget)
    plan.num_samples = repeats
    return plan


