"""Searchers that need no outside library: random, grid (the Talos row of EMERALD-O Table 9)
and a fixed configuration (the TrivialAugment baseline)."""

from __future__ import annotations

import functools
import inspect
import pickle
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from service.backends.tune.spaces import from_tune
from service.core.space import SearchSpace


class StateSearcher(Searcher):
    """A Searcher whose whole state is `get_state()`: save and restore pickle it to a file
    the service itself wrote (never a user-supplied file).

    A subclass whose constructor takes the space first may be built without one, as Ray's
    own wrappers are: `RandomSearch(seed=0)` as a `tune.Tuner` search_alg then takes its
    space from Tune's `param_space` (`SearchSpace.from_tune`, any names) when Tune calls
    `set_search_properties`."""

    _deferred: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or list(inspect.signature(init).parameters)[1:2] != ["space"]:
            return

        @functools.wraps(init)
        def deferring(self: StateSearcher, space: Any = None, *args: Any, **kw: Any) -> None:
            if space is None:  # the space comes with set_search_properties
                self._deferred = (init, args, kw)
                StateSearcher.__init__(self, metric=kw.get("metric"), mode=kw.get("mode"))
                return
            init(self, space, *args, **kw)

        cls.__init__ = deferring  # type: ignore[method-assign]

    def __init__(self, *, metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        # The space comes from the constructor (the service's runs: Tune's config then only
        # holds constants), or now from Tune's param_space (a user's own Tuner).
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if self._deferred is not None:
            init, args, kw = self._deferred
            space = from_tune(config)
            self._deferred = None
            init(self, space, *args, **{**kw, "metric": self._metric, "mode": self._mode})
        return True

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Searchers that do not learn from results ignore them."""

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file


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
