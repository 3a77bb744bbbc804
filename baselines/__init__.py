"""Decisions by others: the well-known searchers and schedulers (random, grid, Optuna,
HyperOpt, scikit-optimize, Spearmint, Ax, BOHB, HyperBand, ASHA, PBT, PB2, TrivialAugment).
Their registry entries are in `baselines.entries`, gathered by `service.registry`."""
