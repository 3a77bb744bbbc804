"""The project's own searchers as drop-in searchers of a user's `tune.Tuner`, tested the way
Ray tests its searcher wrappers: built without a space they take Tune's param_space (names
the service has never heard of), keep constants out of their suggestions, survive NaN and
infinite results behind ResultGuard, restore to the same next suggestion, and find a valid
best trial in a real Tuner run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from service.backends.tune.searching import ResultGuard
from service.backends.tune.spaces import from_tune
from service.core.space import SpaceError

PARAM_SPACE = {"alpha": tune.uniform(-1.0, 1.0), "scale": tune.loguniform(1e-3, 1.0),
               "depth": tune.randint(1, 4), "kind": tune.choice(["x", "y"]),
               "constant": 7}


def _searcher(name: str) -> Any:
    """`name` built without a space, as a user would."""
    import baselines
    import rllib_policies

    return {"random": lambda: baselines.RandomSearch(seed=1),
            "grid": lambda: baselines.GridSearch(points=3, seed=1),
            "skopt": lambda: baselines.SkOptSearch(n_initial_points=2, seed=1),
            "adaptive-q": lambda: rllib_policies.AdaptiveQSearch(seed=1, points=3),
            "layerwise": lambda: rllib_policies.LayerwiseSearch(seed=1, points=3),
            "hypera-search": lambda: rllib_policies.HyperaSearch(
                seed=1, random_starts=2, batch_size=8, learning_starts=2,
                groups={"optimization": ["scale", "alpha"], "architecture": ["depth"],
                        "data": ["kind"]}),
            # EMERALD-O's agents choose augmentation, optimizer and rate: the space's names
            # take those roles (the numeric ones as Table 3's augmentation slots).
            "emerald": lambda: rllib_policies.EmeraldSearch(
                seed=1, settings=rllib_policies.EmeraldSettings(batch_size=4,
                                                                learning_starts=2),
                names={"scale": "lr", "kind": "optimizer", "alpha": "rotation",
                       "depth": "shift"})}[name]()


NAMES = ["random", "grid", "skopt", "adaptive-q", "layerwise", "hypera-search", "emerald"]


def test_param_space_conversion() -> None:
    space = from_tune(PARAM_SPACE)
    assert [(d.name, d.kind) for d in space] == [
        ("alpha", "uniform"), ("scale", "loguniform"), ("depth", "int"), ("kind", "choice")]
    assert (space["depth"].low, space["depth"].high) == (1, 3)  # randint's upper is exclusive
    for bad, match in (({"q": tune.quniform(0, 1, 0.1)}, "param_space.q: Float with a "
                        "Quantized sampler"),
                       ({"g": tune.grid_search([1, 2])}, "param_space.g: grid_search"),
                       ({"n": {"inner": tune.uniform(0, 1)}}, "param_space.n: nested"),
                       ({"c": 3}, "param_space: nothing to search")):
        with pytest.raises(SpaceError, match=match):
            from_tune(bad)


@pytest.mark.parametrize("name", NAMES)
def test_takes_the_space_from_set_search_properties(name: str) -> None:
    searcher = ResultGuard(_searcher(name))
    assert searcher.set_search_properties("score", "max", PARAM_SPACE)
    space = from_tune(PARAM_SPACE)
    for i, result in enumerate([math.nan, math.inf, -math.inf, 0.5, None]):
        config = searcher.suggest(f"t{i}")
        assert set(config) <= set(space.names) and "constant" not in config
        assert space.contains(config), config
        # NaN, +-inf and a missing metric reach the searcher as failures, not as numbers
        searcher.on_trial_complete(f"t{i}", None if result is None else {"score": result})
    assert searcher.best is not None and searcher.best[0] == 0.5


@pytest.mark.parametrize("name", NAMES)
def test_save_and_restore_give_the_same_next_suggestion(name: str, tmp_path: Path) -> None:
    first = _searcher(name)
    first.set_search_properties("score", "max", PARAM_SPACE)
    for i in range(3):
        config = first.suggest(f"t{i}")
        first.on_trial_complete(f"t{i}", {"score": float(len(str(config)) % 5)})
    first.save(str(tmp_path / "state.pkl"))
    second = _searcher(name)
    second.set_search_properties("score", "max", PARAM_SPACE)
    second.restore(str(tmp_path / "state.pkl"))
    assert first.suggest("next") == second.suggest("next")


def _objective(config: dict[str, Any]) -> None:
    assert config["constant"] == 7  # Tune merges the constants itself
    score = -(config["alpha"] - 0.3) ** 2 + 0.1 * config["depth"] + (config["kind"] == "y")
    tune.report({"score": score})


@pytest.mark.parametrize("name", NAMES)
def test_a_users_own_tuner_runs_with_the_searcher(name: str, ray_session,
                                                  tmp_path: Path) -> None:
    results = tune.Tuner(
        _objective, param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=_searcher(name), metric="score", mode="max",
                                    num_samples=6),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
    ).fit()
    assert not results.errors and len(results) >= 1
    best = results.get_best_result()
    assert from_tune(PARAM_SPACE).contains(best.config)
    assert best.config["constant"] == 7 and math.isfinite(best.metrics["score"])
