"""One translation of trial outcomes for every searcher, so a NaN loss cannot poison a
surrogate model: non-finite, missing or diverged results reach the wrapped searcher as
failures (`error=True`), which each library records as a failed trial (Optuna FAIL, HyperOpt
error state, Ax failure, BOHB skip, GP worst-seen). Suggestions come back as plain Python
values (BOHB returns numpy scalars)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.search import Searcher


def is_failure(result: dict | None, metric: str | None) -> bool:
    """Whether a final result carries no usable finite metric (or the trial diverged)."""
    if not result or metric is None or result.get("diverged"):
        return True
    value = result.get(metric)
    try:
        return value is None or not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def plain(config: Any) -> Any:
    """Numpy scalars to Python values, recursively through dicts and lists."""
    if isinstance(config, dict):
        return {k: plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return type(config)(plain(v) for v in config)
    return config.item() if isinstance(config, np.generic) else config


class ResultGuard(Searcher):
    """Wraps a searcher; forwards everything, translating outcomes on the way in."""

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = self.searcher.suggest(trial_id)
        return plain(config) if isinstance(config, dict) else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not is_failure(result, self.metric):
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if error or is_failure(result, self.metric):
            self.searcher.on_trial_complete(trial_id, result=None, error=True)
        else:
            self.searcher.on_trial_complete(trial_id, result=result, error=False)

    def on_pause(self, trial_id: str) -> None:
        """HyperBandForBOHB pauses trials and tells BOHB's searcher (ConcurrencyLimiter
        forwards it here)."""
        if hasattr(self.searcher, "on_pause"):
            self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        if hasattr(self.searcher, "on_unpause"):
            self.searcher.on_unpause(trial_id)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:
        # Tune's SearchGenerator saves each wrapper's own state and the innermost searcher's
        # file separately; the guard holds no state of its own.
        return {}

    def set_state(self, state: dict) -> None:
        pass
