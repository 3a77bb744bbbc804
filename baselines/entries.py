"""Registry entries of the baselines, as data (gathered by `service.core.registry`).

Bayesian optimisers are declared in the order Table 8 prefers them (EMERALD-O Table 6 lists
Scikit-Optimize as its GP-based BO).
"""

from __future__ import annotations

from typing import Any

from service.core.registry import Entry, Option
from service.core.space import HPARAMS, OPTIMIZERS, SearchSpace

_F = "baselines._factories:"

_N_INIT = Option(int, 5, "random trials before the model is used", low=1, high=10_000)
_ETA = Option(int, 3, "keep 1/eta of trials at each rung", low=2, high=100)
_POP = Option(int, 4, "population size", low=2, high=10_000)
_PERTURB = Option(int, 1, "epochs between exploit/explore steps", low=1, high=100_000)
_MO_SCHEDULER = Option(str, "none", "early stopping: asha stops trials on the scalarised "
                       "objective (a scheduler compares one metric)", choices=("none", "asha"))


def _needs_numeric_range(space: SearchSpace, options: dict[str, Any]) -> str | None:
    if not space.to_pb2_bounds():
        return ("needs at least one numeric range a running trial can change (e.g. lr: "
                "{loguniform: [...]}); the architecture and epochs are fixed per trial")
    return None


ENTRIES: list[Entry] = [
    Entry("random", "random search (seeded, log-uniform for log ranges)", _F + "random",
          table9_row="Additional Tools"),
    Entry("grid", "grid search in seeded random order", _F + "grid",
          {"points": Option(int, 3, "values per continuous range", low=2, high=1000),
           "shuffle": Option(bool, True, "visit the grid in seeded random order")},
          table9_row="Talos", table8="grid"),
    Entry("skopt", "scikit-optimize GP with expected improvement", _F + "skopt",
          {"n_initial_points": _N_INIT}, table9_row="Scikit-Optimize", table8="bayesian",
          replay_s=2.2),
    Entry("spearmint", "GP with probability of improvement (Spearmint)", _F + "spearmint",
          {"n_initial_points": _N_INIT}, table9_row="Spearmint", table8="bayesian",
          replay_s=2.2),
    Entry("ax", "Ax (BoTorch) Bayesian optimisation", _F + "ax",
          table9_row="Ax (Adaptive Experimentation)", table8="bayesian", replay_s=17.3),
    Entry("optuna", "Optuna TPE", _F + "optuna", {"n_startup_trials": _N_INIT},
          table9_row="Optuna", table8="bayesian"),
    Entry("optuna-nsga2", "Optuna NSGA-II (Deb et al. 2002): searches the objectives' front "
          "natively (needs objectives)", _F + "optuna_nsga2",
          {"population_size": Option(int, 8, "individuals per generation", low=2,
                                     high=10_000),
           "scheduler": _MO_SCHEDULER},
          multi_objective=True),
    Entry("optuna-motpe", "Optuna multi-objective TPE (MOTPE, Ozaki et al. 2020): searches "
          "the objectives' front natively (needs objectives)", _F + "optuna_motpe",
          {"n_startup_trials": _N_INIT, "scheduler": _MO_SCHEDULER},
          multi_objective=True),
    Entry("hyperopt", "HyperOpt TPE", _F + "hyperopt", {"n_initial_points": _N_INIT},
          table9_row="HyperOpt", table8="bayesian", replay_s=0.09),
    Entry("bohb", "BOHB: TuneBOHB + HyperBandForBOHB", _F + "bohb",
          {"reduction_factor": _ETA}),
    Entry("hyperband", "HyperBand scheduler over random search", _F + "hyperband",
          {"reduction_factor": _ETA}, table9_row="HyperBand"),
    Entry("asha", "asynchronous successive halving over random search", _F + "asha",
          {"grace_period": Option(int, 1, "epochs before the first cut", low=1,
                                  high=100_000),
           "reduction_factor": _ETA}),
    Entry("pbt", "population-based training", _F + "pbt",
          {"population": _POP, "perturbation_interval": _PERTURB,
           # Ray's PopulationBasedTraining refuses a quantile outside [0, 0.5].
           "quantile_fraction": Option(float, 0.25, "bottom fraction that exploits",
                                       low=0.0, high=0.5),
           "resample_probability": Option(float, 0.25, "chance to resample on explore",
                                          low=0.0, high=1.0)},
          kind="population"),
    Entry("pb2", "PB2 (GP-bandit PBT; log10 of log ranges)", _F + "pb2",
          {"population": _POP, "perturbation_interval": _PERTURB},
          kind="population", check=_needs_numeric_range, replay_s=0.18,
          continuous_space=True),
    Entry("fixed", "no search: one optimizer for the whole run at its own rate, the space's "
          "constants for the rest (Pham 2024 Table 2's SGD, SAM and Adam rows)",
          _F + "fixed",
          {"optimizer": Option(str, "sgd", "the optimizer", choices=OPTIMIZERS),
           "lr": Option(float, None, "its learning rate (default: the optimizer's own, as "
                        "optsel-* use it)", low=HPARAMS["lr"].low, high=HPARAMS["lr"].high),
           "patience": Option(int, 10, "early stopping: end a trial after this many epochs "
                              "without a better metric (0: never)", low=0, high=100_000),
           "repeats": Option(int, 1, "trials of the fixed config (a seeded run repeats "
                             "exactly)", low=1, high=10_000)},
          needs_space=False, feeds=("table2",)),
    Entry("trivialaugment", "no search: TrivialAugmentWide with a fixed optimizer",
          _F + "trivialaugment",
          {"optimizer": Option(str, "adam", "the fixed optimizer", choices=OPTIMIZERS),
           "lr": Option(float, 1e-3, "the fixed learning rate", low=HPARAMS["lr"].low,
                        high=HPARAMS["lr"].high),
           "repeats": Option(int, 1, "trials of the fixed config", low=1, high=10_000)},
          needs_space=False),
]
