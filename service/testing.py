"""The searcher contract as a test suite you can run against a searcher of your own (as
`optuna.testing.pytest_samplers` does for samplers).

Subclass `SearcherContract` in a test module and say how to build your searcher; pytest
collects the inherited tests:

    from service.backends.tune.spaces import to_tune
    from service.testing import SearcherContract

    class TestMySearcher(SearcherContract):
        def make_searcher(self, space, seed):
            return MySearcher(to_tune(space), metric="val_acc", mode="max", seed=seed)

The suite drives the searcher as Ray Tune's controller does (`suggest`, `on_trial_result`,
`on_trial_complete`, `save` / `restore`) over a space of the service's catalogue, with no
Ray instance: suggestions stay inside the space over many draws, NaN / +-inf / errored /
metric-less results are absorbed, a restored searcher (also one saved while a trial still
ran) continues with the same suggestions, and trials pending at once get different points.
The registry's own entries pass the same checks (tests/contract/test_searchers.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.core.space import SearchSpace, default_space, resolve_config

Config = dict[str, Any]
METRIC = "val_acc"


OPTIMUM_LR = 1e-3


def score(config: Config, epoch: int = 3) -> float:
    """A smooth function of the hyperparameters that rises with epochs, so model-based
    searchers have something to learn: best at lr=1e-3, adam, flip on, rotation 10."""
    hp = resolve_config({k: v for k, v in config.items() if k != "run"})
    value = 0.9 - 0.08 * (math.log10(hp["lr"]) - math.log10(OPTIMUM_LR)) ** 2
    value += {"adam": 0.05, "rmsprop": 0.02}.get(hp["optimizer"], 0.0)
    value += 0.02 * hp["flip"] - 0.001 * abs(hp["rotation"] - 10)
    return value * (1 - 0.5 ** epoch)


def check_inside(space: SearchSpace, config: Any, where: str = "") -> None:
    """`config` is a suggestion inside `space`: every searched name, each value its
    dimension holds, plain Python values (Tune stores configs as JSON)."""
    assert isinstance(config, dict), f"{where}: suggested {config!r}, not a config"
    hp = resolve_config(config)
    for dim in space.searched:
        assert dim.name in hp, f"{where}: {dim.name} missing from {config}"
        assert dim.contains(hp[dim.name]), f"{where}: {dim.name}={hp[dim.name]!r} outside {dim}"
    numpy = [k for k, v in config.items() if type(v).__module__.startswith("numpy")]
    assert not numpy, f"{where}: numpy values for {numpy} (give plain Python values)"


def draw(searcher: Any, count: int, prefix: str = "d",
         result: Callable[[Config], float] = score) -> list[Config]:
    """Up to `count` suggestions, each completed with `result`; stops early when the
    searcher waits for results or has run out (None, "FINISHED")."""
    configs: list[Config] = []
    for i in range(count):
        config = searcher.suggest(f"{prefix}{i}")
        if not isinstance(config, dict):
            break
        configs.append(config)
        searcher.on_trial_complete(f"{prefix}{i}", result={METRIC: result(config)})
    return configs


def next_suggestions(searcher: Any, ids: list[str]) -> list[Any]:
    return [searcher.suggest(trial_id) for trial_id in ids]


BAD_OUTCOMES: tuple[tuple[Config | None, bool], ...] = (
    ({METRIC: math.nan}, False), ({METRIC: math.inf}, False), ({METRIC: -math.inf}, False),
    (None, True), ({"other": 1.0}, False), ({METRIC: 0.5, "diverged": True}, False),
    ({METRIC: 0.7}, False), ({METRIC: 0.6}, False))
"""What a trial may end with: NaN and infinite metrics, an error without a result, a result
without the metric, a diverged epoch, then ordinary results."""


def feed_bad_outcomes(searcher: Any) -> dict[str, Config]:
    """Complete one suggested trial with each of `BAD_OUTCOMES`; the configs by trial id."""
    configs: dict[str, Config] = {}
    for i, (result, error) in enumerate(BAD_OUTCOMES):
        config = searcher.suggest(f"a{i}")
        if not isinstance(config, dict):  # a finite grid may run out
            break
        configs[f"a{i}"] = config
        searcher.on_trial_result(f"a{i}", {**(result or {}), "training_iteration": 1})
        searcher.on_trial_complete(f"a{i}", result=result, error=error)
    return configs


class SearcherContract:
    """The searcher contract; subclass it and implement `make_searcher`."""

    space: SearchSpace = default_space()
    """The space the suite searches (EMERALD-O's: flips, rotation, optimizer, log lr)."""
    draws: int = 50
    """Suggestions checked (completed one by one); lower it for a searcher that refits a
    costly model on every result."""
    distinct_pending: bool = True
    """Whether trials pending at the same time must get different points (a grid or a
    fixed searcher may say False)."""

    def make_searcher(self, space: SearchSpace, seed: int) -> Any:
        """A fresh searcher over `space` that maximises `val_acc`, seeded by `seed`."""
        raise NotImplementedError("SearcherContract: implement make_searcher(space, seed)")

    def test_suggestions_stay_inside_the_space(self) -> None:
        configs = draw(self.make_searcher(self.space, 0), self.draws)
        assert configs, "no suggestion at all"
        for i, config in enumerate(configs):
            check_inside(self.space, config, f"suggestion {i}")

    def test_bad_results_are_absorbed(self) -> None:
        searcher = self.make_searcher(self.space, 0)
        feed_bad_outcomes(searcher)
        after = searcher.suggest("after")
        if isinstance(after, dict):
            check_inside(self.space, after, "after NaN, inf, error and metric-less results")

    def test_save_and_restore_give_the_same_next_suggestions(self, tmp_path: Path) -> None:
        first = self.make_searcher(self.space, 3)
        draw(first, 6, prefix="h")
        path = str(tmp_path / "searcher.pkl")
        first.save(path)
        restored = self.make_searcher(self.space, 3)
        restored.restore(path)
        ids = ["n0", "n1", "n2"]
        assert next_suggestions(first, ids) == next_suggestions(restored, ids)

    def test_restore_with_a_trial_still_running_continues_identically(self, tmp_path: Path
                                                                      ) -> None:
        first = self.make_searcher(self.space, 5)
        draw(first, 5, prefix="m")
        running = first.suggest("m5")
        if not isinstance(running, dict):
            return  # it waits for results or has run out: nothing is pending
        path = str(tmp_path / "mid.pkl")
        first.save(path)
        twin = self.make_searcher(self.space, 5)
        twin.restore(path)
        for searcher in (first, twin):
            searcher.on_trial_complete("m5", result={METRIC: score(running)})
        ids = ["after0", "after1"]
        assert next_suggestions(first, ids) == next_suggestions(twin, ids)

    def test_trials_pending_at_once_get_different_points(self) -> None:
        if not self.distinct_pending:
            return
        searcher = self.make_searcher(self.space, 0)
        configs = [c for c in next_suggestions(searcher, ["p0", "p1", "p2"])
                   if isinstance(c, dict)]
        keys = {tuple(sorted(c.items())) for c in configs}
        assert len(keys) == len(configs), f"the same point for pending trials: {configs}"
