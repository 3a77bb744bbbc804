"""Searchers that need no outside library: random, grid (the Talos row of EMERALD-O Table 9)
and a fixed configuration (the TrivialAugment baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.search import Searcher

from service.backends.tune.searching import StateSearcher
from service.core.space import SearchSpace


class RandomSearch(StateSearcher):
    """Uniform (log-uniform for log ranges) sampling from the shared space, seeded."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = space
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self._space.sample(self._rng)

    def get_state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


class GridSearch(StateSearcher):
    """The full factorial grid (continuous ranges at `points` values), visited in an order
    shuffled by seed, as Talos samples a fraction of its grid; finishes when exhausted."""

    def __init__(
        self, space: SearchSpace, *, points: int = 3, shuffle: bool = True, seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._grid = space.grid(points)
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self._grid))
            self._grid = [self._grid[i] for i in order]
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._grid)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._next >= len(self._grid):
            return Searcher.FINISHED
        config = dict(self._grid[self._next])
        self._next += 1
        return config

    def get_state(self) -> dict[str, Any]:
        return {"next": self._next, "grid": self._grid}

    def set_state(self, state: dict[str, Any]) -> None:
        self._next, self._grid = state["next"], state["grid"]


class FixedSearch(StateSearcher):
    """The same configuration `repeats` times: a no-search baseline."""

    def __init__(self, config: dict[str, Any], *, repeats: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config = dict(config)
        self._left = repeats

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._left <= 0:
            return Searcher.FINISHED
        self._left -= 1
        return dict(self._config)

    def get_state(self) -> dict[str, Any]:
        return {"left": self._left, "config": self._config}

    def set_state(self, state: dict[str, Any]) -> None:
        self._left, self._config = state["left"], state["config"]
