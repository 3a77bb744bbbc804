"""Decisions by others: the well-known searchers and schedulers (random, grid, Optuna,
HyperOpt, scikit-optimize, Spearmint, Ax, BOHB, HyperBand, ASHA, PBT, PB2, TrivialAugment).
Their registry entries are in `baselines.entries`, gathered by `service.core.registry`.

`RandomSearch`, `GridSearch` and `SkOptSearch` are this project's own searchers, drop-in
searchers of a user's own `tune.Tuner`: built without a space they take Tune's param_space
(wrap them in `service.backends.tune.searching.ResultGuard` to turn NaN and infinite results into
failures). Importing this package is cheap; the classes load Ray Tune when first used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"RandomSearch": "baselines._simple", "GridSearch": "baselines._simple",
            "SkOptSearch": "baselines._skopt"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'baselines' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
