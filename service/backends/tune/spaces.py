"""The search space in Ray Tune's terms: our `SearchSpace` as Tune's domain objects (what
Optuna, HyperOpt, Ax and BOHB convert from), and a Tune `param_space` read back as a
`SearchSpace` (the drop-in searchers). Kept out of the core, which imports no Ray."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.search import sample

from service.core.api import plain
from service.core.space import Dim, SearchSpace, SpaceError


def to_tune(space: SearchSpace) -> dict[str, Any]:
    """Tune's domain objects for the searched dimensions (Optuna, HyperOpt, Ax, BOHB)."""
    out: dict[str, Any] = {}
    for d in space.searched:
        if d.kind == "choice":
            out[d.name] = tune.choice(list(d.choices))
        elif d.kind == "loguniform":
            out[d.name] = tune.loguniform(d.low, d.high)
        elif d.kind == "uniform":
            out[d.name] = tune.uniform(d.low, d.high)
        else:
            out[d.name] = tune.randint(int(d.low), int(d.high) + 1)
    return out


def from_tune(param_space: Mapping[str, Any]) -> SearchSpace:
    """The searched dimensions of a Tune `param_space` (any names): `tune.choice`,
    `tune.uniform`, `tune.loguniform`, `tune.randint` (upper bound exclusive, as Tune's)
    and `tune.lograndint` become choice / uniform / loguniform / int ranges; plain values
    are constants Tune merges itself. Nested spaces, `grid_search`, quantised and other
    samplers raise SpaceError naming the key."""
    dims: list[Dim] = []
    for name, value in param_space.items():
        if isinstance(value, Mapping) and "grid_search" in value:
            raise SpaceError(f"param_space.{name}: grid_search is Tune's own variant "
                             f"generator; use tune.choice with this searcher")
        if isinstance(value, Mapping) and any(isinstance(v, sample.Domain)
                                              for v in value.values()):
            raise SpaceError(f"param_space.{name}: nested search dimensions are not "
                             f"supported; flatten them to top-level keys")
        if not isinstance(value, sample.Domain):
            continue
        sampler = value.get_sampler()
        kind = type(sampler).__name__
        if isinstance(value, sample.Categorical):
            dims.append(Dim(name, "choice", tuple(plain(list(value.categories)))))
        elif isinstance(value, sample.Float) and kind in ("_Uniform", "_LogUniform"):
            dims.append(Dim(name, "loguniform" if kind == "_LogUniform" else "uniform",
                            (), float(value.lower), float(value.upper)))
        elif isinstance(value, sample.Integer) and kind in ("_Uniform", "_LogUniform"):
            dims.append(Dim(name, "int", (), int(value.lower), int(value.upper) - 1))
        else:
            raise SpaceError(f"param_space.{name}: {type(value).__name__} with a {kind} "
                             f"sampler is not supported; use tune.choice, uniform, "
                             f"loguniform or randint")
    if not dims:
        raise SpaceError("param_space: nothing to search; give at least one tune.choice, "
                         "tune.uniform, tune.loguniform or tune.randint")
    return SearchSpace(tuple(dims))
