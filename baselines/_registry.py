"""The registry of searchers and schedulers by name.

Each entry turns the shared `SearchSpace`, a seed and an equal budget into a `SearchPlan`:
what Tune needs to run it (searcher, scheduler, number of trials, epochs per trial, constants).
Imports of outside libraries happen inside the factories, so `check_name` and
`check_options` stay cheap for config validation. Unknown names and options fail with a
"did you mean" message.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.config import Budget
from service.space import LOG10_PREFIX, Dim, SearchSpace


class RegistryError(ValueError):
    """An unknown searcher name or option."""


@dataclass
class SearchPlan:
    """What one registry entry asks Tune to run.

    `searcher` is a Tune Searcher (wrapped in the result guard) or None when the entry needs
    Tune's variant generator (PBT and PB2 refuse searchers); then `initial_configs` holds the
    seeded population and `param_space` the Tune domains the scheduler mutates.
    """

    name: str
    searcher: Any
    scheduler: Any
    num_samples: int
    max_epochs: int
    epoch_budget: int | None
    param_space: dict[str, Any] = field(default_factory=dict)
    initial_configs: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    min_concurrency: int = 1
    controller: str | None = None
    controller_every: int = 1

    @property
    def multi_fidelity(self) -> bool:
        return self.epoch_budget is not None

    def concurrency(self, cap: int) -> int:
        """Tune's trial cap for this plan: the user's cap, raised where the method needs more
        live (running or paused) trials to work at all."""
        return max(cap, self.min_concurrency)


@dataclass(frozen=True)
class Option:
    """One option of an entry: its type, default and a line of help."""

    type: type
    default: Any
    help: str
    low: float | None = None


@dataclass(frozen=True)
class Entry:
    """A registry entry: name, the EMERALD-O Table 9 row it stands for, options, factory."""

    name: str
    summary: str
    table9_row: str | None
    options: dict[str, Option]
    factory: Callable[..., SearchPlan]
    multi_fidelity: bool = False


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def entry_name(name: str) -> str:
    """The registry entry of `name`: a searcher may carry a label, `emerald:product`, so
    one experiment can compare variants of an entry (options given per labelled name)."""
    return name.split(":", 1)[0]


def check_name(name: str) -> str:
    """Return `name` if its entry is registered (and its label is safe), else raise with a
    suggestion."""
    base = entry_name(name) if isinstance(name, str) else name
    if not isinstance(name, str) or base not in ENTRIES:
        raise RegistryError(
            f"unknown searcher {name!r}{_did_you_mean(str(base), list(ENTRIES))}; "
            f"available: {', '.join(ENTRIES)}"
        )
    label = name[len(base) + 1:]
    if ":" in name and not re.fullmatch(r"[a-z0-9_-]{1,40}", label):
        raise RegistryError(f"searcher label {label!r} in {name!r}: use a-z, 0-9, '_' or '-'")
    return name


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an entry's options; return them complete with defaults."""
    entry = ENTRIES[entry_name(check_name(name))]
    out = {key: opt.default for key, opt in entry.options.items()}
    if not isinstance(options, Mapping):
        raise RegistryError(f"options of {name!r} must be a mapping of option: value")
    for key, value in options.items():
        if key not in entry.options:
            accepted = ", ".join(entry.options) or "none"
            raise RegistryError(
                f"unknown option {key!r} for {name!r}"
                f"{_did_you_mean(str(key), list(entry.options))}; accepted: {accepted}"
            )
        opt = entry.options[key]
        ok = isinstance(value, opt.type) and not (
            opt.type in (int, float) and isinstance(value, bool)
        )
        if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise RegistryError(
                f"option {key!r} of {name!r} must be {opt.type.__name__}, got {value!r}"
            )
        if opt.low is not None and value < opt.low:
            raise RegistryError(f"option {key!r} of {name!r} must be >= {opt.low}, got {value}")
        out[key] = value
    return out


def available() -> list[str]:
    return list(ENTRIES)


def build(
    name: str,
    *,
    space: SearchSpace,
    metric: str,
    mode: str,
    seed: int,
    budget: Budget,
    options: Mapping[str, Any] | None = None,
) -> SearchPlan:
    """Build the plan of entry `name` over `space` for one seed and budget."""
    from baselines._guard import ResultGuard

    opts = check_options(name, options or {})
    plan = ENTRIES[entry_name(name)].factory(
        space=space, metric=metric, mode=mode, seed=seed, budget=budget, **opts
    )
    if plan.searcher is not None:
        plan.searcher = ResultGuard(plan.searcher)
    plan.param_space = {**space.constants, **plan.param_space}
    plan.seed = seed
    return plan


# Factories, one per entry. Each receives space, metric, mode, seed, budget and its options.


def _plain_plan(name: str, searcher: Any, budget: Budget, scheduler: Any = None) -> SearchPlan:
    return SearchPlan(name, searcher, scheduler, budget.trials, budget.epochs, None)


def _random(*, space, metric, mode, seed, budget, **_: Any) -> SearchPlan:
    from baselines._simple import RandomSearch

    return _plain_plan("random", RandomSearch(space, seed=seed, metric=metric, mode=mode), budget)


def _grid(*, space, metric, mode, seed, budget, points: int, shuffle: bool) -> SearchPlan:
    from baselines._simple import GridSearch

    searcher = GridSearch(space, points=points, shuffle=shuffle, seed=seed, metric=metric,
                          mode=mode)
    plan = _plain_plan("grid", searcher, budget)
    plan.num_samples = min(budget.trials, searcher.size)
    return plan


def _optuna(*, space, metric, mode, seed, budget, n_startup_trials: int) -> SearchPlan:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    searcher = OptunaSearch(space=OptunaSearch.convert_search_space(space.to_tune()),
                            metric=metric, mode=mode, sampler=sampler)
    return _plain_plan("optuna", searcher, budget)


def _hyperopt(*, space, metric, mode, seed, budget, n_initial_points: int) -> SearchPlan:
    from ray.tune.search.hyperopt import HyperOptSearch

    searcher = HyperOptSearch(
        space=HyperOptSearch.convert_search_space(space.to_tune()), metric=metric, mode=mode,
        random_state_seed=seed,
        n_initial_points=n_initial_points,
    )
    return _plain_plan("hyperopt", searcher, budget)


def _gp(acq_func: str, name: str) -> Callable[..., SearchPlan]:
    def factory(*, space, metric, mode, seed, budget, n_initial_points: int) -> SearchPlan:
        from baselines._skopt import SkOptSearch

        searcher = SkOptSearch(space, acq_func=acq_func, n_initial_points=n_initial_points,
                               seed=seed, metric=metric, mode=mode)
        return _plain_plan(name, searcher, budget)

    return factory


def _ax(*, space, metric, mode, seed, budget) -> SearchPlan:
    from ray.tune.search.ax import AxSearch

    searcher = AxSearch(space=AxSearch.convert_search_space(space.to_tune()), metric=metric,
                        mode=mode, random_seed=seed, verbose_logging=False)
    return _plain_plan("ax", searcher, budget)


def _fidelity_trials(budget: Budget) -> int:
    """Trials for a multi-fidelity method: enough that early stopping can spend the whole
    epoch budget; the budget stopper ends the experiment when it is spent."""
    return max(budget.trials, budget.epoch_budget)


def largest_bracket(max_t: int, eta: int) -> int:
    """Trials in the largest bracket of synchronous HyperBand (Tune's HyperBandScheduler).

    Synchronous HyperBand pauses each trial at a rung until its whole bracket arrives, and
    Tune's concurrency limit counts paused trials as live: with a cap below the bracket size
    the bracket never fills and HyperBand stops nothing (measured: 6 of 6 trials ran to
    max_t). So these plans raise the cap to this size; paused trials hold no CPU or GPU.
    """
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    return max(math.ceil(s_max_1 / (s + 1) * eta**s) for s in range(s_max_1))


def _bohb(*, space, metric, mode, seed, budget, reduction_factor: int) -> SearchPlan:
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    searcher = TuneBOHB(space=TuneBOHB.convert_search_space(space.to_tune()), metric=metric,
                        mode=mode, seed=seed)
    scheduler = HyperBandForBOHB(time_attr="training_iteration", max_t=budget.epochs,
                                 reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearchPlan("bohb", searcher, scheduler, _fidelity_trials(budget), budget.epochs,
                      budget.epoch_budget,
                      min_concurrency=largest_bracket(budget.epochs, reduction_factor))


def _hyperband(*, space, metric, mode, seed, budget, reduction_factor: int) -> SearchPlan:
    from ray.tune.schedulers import HyperBandScheduler

    from baselines._simple import RandomSearch

    scheduler = HyperBandScheduler(time_attr="training_iteration", max_t=budget.epochs,
                                   reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearchPlan("hyperband", RandomSearch(space, seed=seed, metric=metric, mode=mode),
                      scheduler, _fidelity_trials(budget), budget.epochs, budget.epoch_budget,
                      min_concurrency=largest_bracket(budget.epochs, reduction_factor))


def _asha(*, space, metric, mode, seed, budget, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler

    from baselines._simple import RandomSearch

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                              grace_period=min(grace_period, budget.epochs),
                              reduction_factor=reduction_factor, metric=metric, mode=mode)
    return SearchPlan("asha", RandomSearch(space, seed=seed, metric=metric, mode=mode),
                      scheduler, _fidelity_trials(budget), budget.epochs, budget.epoch_budget)


def _population(space: SearchSpace, seed: int, population: int) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(population)]


def _population_epochs(budget: Budget, population: int) -> int:
    return max(1, budget.epoch_budget // population)


def _pbt(*, space, metric, mode, seed, budget, population: int, perturbation_interval: int,
         quantile_fraction: float, resample_probability: float) -> SearchPlan:
    from ray.tune.schedulers import PopulationBasedTraining

    population = min(population, budget.epoch_budget)
    domains = space.to_tune()
    # PBT perturbs a Domain by multiplying it; categorical values must be given as lists,
    # which PBT shifts to a neighbouring choice instead.
    mutations = {d.name: list(d.choices) if d.kind == "choice" else domains[d.name]
                 for d in space.searched}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric=metric, mode=mode,
        perturbation_interval=perturbation_interval, hyperparam_mutations=mutations,
        quantile_fraction=quantile_fraction, resample_probability=resample_probability,
        synch=False,
    )
    return SearchPlan("pbt", None, scheduler, population, _population_epochs(budget, population),
                      None, param_space=domains,
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


def _pb2(*, space, metric, mode, seed, budget, population: int,
         perturbation_interval: int) -> SearchPlan:
    from ray.tune.schedulers.pb2 import PB2

    population = min(population, budget.epoch_budget)
    log_space = pb2_space(space)
    bounds = space.to_pb2_bounds()
    if not bounds:
        raise RegistryError("pb2 needs at least one numeric range in the space (e.g. lr)")
    scheduler = PB2(time_attr="training_iteration", metric=metric, mode=mode,
                    perturbation_interval=perturbation_interval, hyperparam_bounds=bounds,
                    synch=False)
    return SearchPlan("pb2", None, scheduler, population, _population_epochs(budget, population),
                      None, param_space=log_space.to_tune(),
                      initial_configs=_population(log_space, seed, population))


def _trivialaugment(*, space, metric, mode, seed, budget, optimizer: str, lr: float,
                    repeats: int) -> SearchPlan:
    from baselines._simple import FixedSearch
    from service.space import parse_dim

    parse_dim("optimizer", optimizer), parse_dim("lr", lr)
    config = {"trivialaugment": True, "flip": False, "rotation": 0, "shift": False,
              "zoom": False, "optimizer": optimizer, "lr": lr}
    searcher = FixedSearch(config, repeats=repeats, metric=metric, mode=mode)
    plan = _plain_plan("trivialaugment", searcher, budget)
    plan.num_samples = repeats
    return plan


def _emerald_settings(algo: str, combine: str, epsilon_decay: float) -> Any:
    from rllib_policies import EmeraldSettings, RewardSettings

    if algo not in ("dqn", "ppo"):
        raise RegistryError(f"option 'algo' must be dqn or ppo, got {algo!r}")
    if combine not in ("weighted", "product", "min"):
        raise RegistryError(f"option 'combine' must be weighted, product or min, got {combine!r}")
    return EmeraldSettings(algo=algo, epsilon_decay=epsilon_decay,
                           rewards=RewardSettings(combine=combine))  # type: ignore[arg-type]


def _emerald(*, space, metric, mode, seed, budget, algo: str, combine: str,
             epsilon_decay: float, early_stopping: bool) -> SearchPlan:
    from ray.tune.schedulers import ASHAScheduler

    from rllib_policies import EmeraldSearch

    searcher = EmeraldSearch(space, metric=metric, mode=mode, seed=seed,
                             settings=_emerald_settings(algo, combine, epsilon_decay),
                             max_epochs=budget.epochs)
    # EMERALD-O 5.1.2: configurations that keep underperforming stop early; the searcher
    # counts a stopped trial as a penalty.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget.epochs,
                              grace_period=1, reduction_factor=3, metric=metric, mode=mode
                              ) if early_stopping and budget.epochs > 1 else None
    return _plain_plan("emerald", searcher, budget, scheduler)


def _emerald_dynamic(*, space, metric, mode, seed, budget, algo: str, combine: str,
                     epsilon_decay: float, step_epochs: int) -> SearchPlan:
    from rllib_policies import ControllerSearch

    searcher = ControllerSearch(space, metric=metric, mode=mode, seed=seed,
                                settings=_emerald_settings(algo, combine, epsilon_decay))
    plan = _plain_plan("emerald-dynamic", searcher, budget)
    plan.controller, plan.controller_every = searcher.name, step_epochs
    return plan


_EMERALD_OPTIONS = {
    "algo": Option(str, "dqn", "RLlib algorithm: dqn (epsilon-greedy + replay) or ppo"),
    "combine": Option(str, "weighted", "reward combination: weighted, product or min"),
    "epsilon_decay": Option(float, 0.01, "exploration decay rate (EMERALD-O 5.1.1)"),
}

_N_INIT = Option(int, 5, "random trials before the model is used", low=1)
_ETA = Option(int, 3, "keep 1/eta of trials at each rung", low=2)
_POP = Option(int, 4, "population size", low=2)
_PERTURB = Option(int, 1, "epochs between exploit/explore steps", low=1)

ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("random", "random search (seeded, log-uniform for log ranges)", "Additional Tools",
              {}, _random),
        Entry("grid", "grid search in seeded random order", "Talos",
              {"points": Option(int, 3, "values per continuous range", low=2),
               "shuffle": Option(bool, True, "visit the grid in seeded random order")}, _grid),
        Entry("optuna", "Optuna TPE", "Optuna", {"n_startup_trials": _N_INIT}, _optuna),
        Entry("hyperopt", "HyperOpt TPE", "HyperOpt", {"n_initial_points": _N_INIT}, _hyperopt),
        Entry("skopt", "scikit-optimize GP with expected improvement", "Scikit-Optimize",
              {"n_initial_points": _N_INIT}, _gp("EI", "skopt")),
        Entry("spearmint", "GP with probability of improvement (Spearmint)", "Spearmint",
              {"n_initial_points": _N_INIT}, _gp("PI", "spearmint")),
        Entry("ax", "Ax (BoTorch) Bayesian optimisation", "Ax (Adaptive Experimentation)", {},
              _ax),
        Entry("bohb", "BOHB: TuneBOHB + HyperBandForBOHB", None,
              {"reduction_factor": _ETA}, _bohb, multi_fidelity=True),
        Entry("hyperband", "HyperBand scheduler over random search", "HyperBand",
              {"reduction_factor": _ETA}, _hyperband, multi_fidelity=True),
        Entry("asha", "asynchronous successive halving over random search", None,
              {"grace_period": Option(int, 1, "epochs before the first cut", low=1),
               "reduction_factor": _ETA}, _asha, multi_fidelity=True),
        Entry("pbt", "population-based training", None,
              {"population": _POP, "perturbation_interval": _PERTURB,
               "quantile_fraction": Option(float, 0.25, "bottom fraction that exploits"),
               "resample_probability": Option(float, 0.25, "chance to resample on explore")},
              _pbt),
        Entry("pb2", "PB2 (GP-bandit PBT; log10 of log ranges)", None,
              {"population": _POP, "perturbation_interval": _PERTURB}, _pb2),
        Entry("trivialaugment", "no search: TrivialAugmentWide with a fixed optimizer", None,
              {"optimizer": Option(str, "adam", "the fixed optimizer"),
               "lr": Option(float, 1e-3, "the fixed learning rate"),
               "repeats": Option(int, 1, "trials of the fixed config", low=1)},
              _trivialaugment),
        Entry("emerald", "EMERALD-O: two RLlib agents as a Tune searcher, one step per trial",
              "EMERALD-O (Proposed)",
              {**_EMERALD_OPTIONS,
               "early_stopping": Option(bool, True, "stop underperformers (5.1.2)")},
              _emerald),
        Entry("emerald-dynamic", "EMERALD-O inside running trials: new settings every k epochs",
              None,
              {**_EMERALD_OPTIONS,
               "step_epochs": Option(int, 1, "epochs per step (the paper: 50)", low=1)},
              _emerald_dynamic),
    ]
}
