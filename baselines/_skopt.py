"""Gaussian-process search through scikit-optimize's ask/tell `Optimizer`.

Ray has had no SkOptSearch since 2.11, so this is the adapter. Two rows of EMERALD-O Table 9
use it: Scikit-Optimize (GP with expected improvement) and Spearmint (GP with probability of
improvement, Table 6). skopt's `ask()` returns the same point until `tell()`, so pending
trials are told a constant lie (the best value seen, skopt's "cl_min") on a copy before
asking: concurrent trials get different points.
"""

from __future__ import annotations

import math
from typing import Any

from service.backends.tune.searching import StateSearcher
from service.core.api import plain
from service.core.space import SearchSpace

ACQ_FUNCS: tuple[str, ...] = ("EI", "PI", "LCB", "gp_hedge")


class SkOptSearch(StateSearcher):
    """A GP searcher over the shared space; minimises internally (negates for mode=max)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        acq_func: str = "EI",
        n_initial_points: int = 5,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if acq_func not in ACQ_FUNCS:
            raise ValueError(f"acq_func {acq_func!r} is not one of {', '.join(ACQ_FUNCS)}")
        from skopt import Optimizer

        self._names = [d.name for d in space.searched]
        # GBRT is not offered: it fails with scikit-learn 1.9.
        self._opt = Optimizer(
            dimensions=space.to_skopt(),
            base_estimator="GP",
            acq_func=acq_func,
            n_initial_points=n_initial_points,
            random_state=seed,
        )
        self._pending: dict[str, list[Any]] = {}

    def _sign(self) -> float:
        return -1.0 if self.mode == "max" else 1.0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        opt = self._opt
        if self._pending:
            lie = min(opt.yi) if opt.yi else 0.0
            opt = self._opt.copy(random_state=self._opt.rng)
            pending = list(self._pending.values())
            opt.tell(pending, [lie] * len(pending))
        point = opt.ask()
        self._pending[trial_id] = point
        return {name: plain(v) for name, v in zip(self._names, point, strict=True)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        point = self._pending.pop(trial_id, None)
        if point is None:
            return
        value = None if (error or not result) else result.get(self.metric)
        if value is not None and math.isfinite(float(value)):
            self._opt.tell(point, self._sign() * float(value))
        elif self._opt.yi:
            # A failed or diverged trial counts as the worst result seen so far: the GP
            # learns to avoid the region without a made-up scale.
            self._opt.tell(point, max(self._opt.yi))

    def get_state(self) -> dict[str, Any]:
        return {"opt": self._opt, "pending": self._pending, "names": self._names}

    def set_state(self, state: dict[str, Any]) -> None:
        self._opt, self._pending, self._names = state["opt"], state["pending"], state["names"]

