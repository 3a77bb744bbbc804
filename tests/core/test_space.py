"""Tests for service.core.space: parsing, sampling, grids, searcher conversions, resolve_config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.core.space import (
    DEFAULT_SPACE,
    HPARAMS,
    OPTIMIZERS,
    ROTATIONS,
    Dim,
    SearchSpace,
    SpaceError,
    default_space,
    parse_dim,
    resolve_config,
)

MIXED = {
    "optimizer": ["adam", "sgd"],
    "lr": {"loguniform": [1e-5, 1e-1]},
    "momentum": {"uniform": [0.5, 0.99]},
    "rotation": {"int": [0, 30]},
    "batch_size": 128,
    "flip": {"choice": [True]},
}
"""Every kind of dimension, plus a constant and a single-value choice."""


@pytest.fixture
def mixed() -> SearchSpace:
    return SearchSpace.from_dict(MIXED)


# --------------------------------------------------------------------------- parse_dim


def test_parse_scalar_is_constant() -> None:
    d = parse_dim("lr", 0.01)
    assert d == Dim("lr", "constant", (0.01,))
    assert d.is_constant and not d.is_numeric_range
    flip = parse_dim("flip", True)
    assert flip.kind == "constant" and flip.choices == (True,)
    assert type(flip.choices[0]) is bool


def test_parse_list_is_choice_with_canonical_values() -> None:
    d = parse_dim("optimizer", ["Adam", "SGD"])
    assert d.kind == "choice"
    assert d.choices == ("adam", "sgd")
    rot = parse_dim("rotation", [0, 10.0])
    assert rot.choices == (0, 10)
    assert all(type(v) is int for v in rot.choices)


@pytest.mark.parametrize(
    ("raw", "kind", "low", "high"),
    [
        ({"loguniform": [1e-5, 1e-1]}, "loguniform", 1e-5, 1e-1),
        ({"uniform": [0, 0.5]}, "uniform", 0.0, 0.5),
    ],
)
def test_parse_mapping_ranges(raw: dict, kind: str, low: float, high: float) -> None:
    name = "lr" if kind == "loguniform" else "label_smoothing"
    d = parse_dim(name, raw)
    assert (d.kind, d.low, d.high) == (kind, low, high)
    assert type(d.low) is float and type(d.high) is float
    assert d.is_numeric_range and not d.is_constant


def test_parse_mapping_int_and_choice() -> None:
    d = parse_dim("batch_size", {"int": [16, 256]})
    assert (d.kind, d.low, d.high) == ("int", 16, 256)
    assert type(d.low) is int and type(d.high) is int
    c = parse_dim("rotation", {"choice": [0, 10, 20]})
    assert c == Dim("rotation", "choice", (0, 10, 20))


@pytest.mark.parametrize(
    ("name", "raw", "match"),
    [
        ("learning_rate", 0.1, "unknown hyperparameter"),
        ("lr", {"loguniform": [1e-5, 1e-1], "uniform": [0, 1]}, "expected one key"),
        ("lr", {"logunifrom": [1e-5, 1e-1]}, "did you mean 'loguniform'"),
        ("weight_decay", {"loguniform": [0.0, 1e-1]}, "low > 0"),
        ("lr", {"uniform": [0.1, 0.01]}, "low < high"),
        ("lr", {"uniform": [0.1]}, r"needs \[low, high\]"),
        ("lr", {"int": [1, 2]}, "real hyperparameter"),
        ("batch_size", {"uniform": [16, 256]}, "integer"),
        ("flip", {"uniform": [False, True]}, "numeric hyperparameter"),
        ("flip", {"uniform": [0, 1]}, "not a boolean"),
        ("flip", 1, "not a boolean"),
        ("rotation", True, "not a number"),
        ("rotation", 10.5, "not an integer"),
        ("rotation", 500, "outside"),
        ("lr", float("nan"), "finite"),
        ("optimizer", "adma", "did you mean 'adam'"),
        ("optimizer", [], "non-empty"),
        ("optimizer", ["adam", "ADAM"], "repeated"),
    ],
)
def test_parse_errors(name: str, raw: object, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        parse_dim(name, raw)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "dim",
    [
        Dim("lr", "loguniform", (), 1e-5, 1e-1),
        Dim("momentum", "uniform", (), 0.5, 0.99),
        Dim("rotation", "int", (), 0, 30),
        Dim("optimizer", "choice", ("adam", "sgd", "rmsprop")),
        Dim("batch_size", "constant", (64,)),
    ],
)
def test_dim_sample_within_bounds(dim: Dim) -> None:
    rng = np.random.default_rng(0)
    values = [dim.sample(rng) for _ in range(2000)]
    assert all(dim.contains(v) for v in values)
    if dim.is_numeric_range:
        assert min(values) >= dim.low and max(values) <= dim.high
    if dim.kind == "int":
        assert all(type(v) is int for v in values)
        assert set(values) == set(range(0, 31))  # both inclusive ends are reachable
    if dim.kind in ("uniform", "loguniform"):
        assert all(type(v) is float for v in values)
    if dim.kind == "choice":
        assert set(values) == set(dim.choices)


def test_loguniform_median_is_geometric_mean() -> None:
    """Log-uniform: log(x) is uniform, so the median is sqrt(low * high), not (low + high) / 2."""
    d = Dim("lr", "loguniform", (), 1e-5, 1e-1)
    rng = np.random.default_rng(12345)
    values = np.array([d.sample(rng) for _ in range(20_000)])
    geo_mean = math.sqrt(1e-5 * 1e-1)  # 1e-3
    # Sample median of 20k uniform(-5, -1) log10 draws: std ~ 4 / sqrt(4 * 20000) ~ 0.014 decades.
    assert abs(math.log10(np.median(values)) - math.log10(geo_mean)) < 0.07
    # Each decade gets about a quarter of the mass; a uniform sampler would put ~90% in the top.
    decades = np.histogram(np.log10(values), bins=[-5, -4, -3, -2, -1])[0] / len(values)
    assert np.all(np.abs(decades - 0.25) < 0.02)


def test_space_sample_covers_searched_only(mixed: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        config = mixed.sample(rng)
        assert set(config) == {"optimizer", "lr", "momentum", "rotation"}
        assert mixed.contains(config)


def test_space_sample_is_seeded(mixed: SearchSpace) -> None:
    a = [mixed.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [mixed.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


# --------------------------------------------------------------------------- grids


def test_grid_full_factorial_count() -> None:
    space = default_space()
    # flip 2 x rotation 4 x shift 2 x zoom 2 x optimizer 3 x lr 3 points
    grid = space.grid(3)
    assert len(grid) == 2 * len(ROTATIONS) * 2 * 2 * 3 * 3
    assert len({tuple(sorted(c.items())) for c in grid}) == len(grid)
    assert all(set(c) == set(space.names) for c in grid)
    assert all(space.contains(c) for c in grid)
    assert space.grid(3) == grid  # fixed order


def test_grid_excludes_constants(mixed: SearchSpace) -> None:
    grid = mixed.grid(2)
    assert len(grid) == 2 * 2 * 2 * 2
    assert all("batch_size" not in c and "flip" not in c for c in grid)


def test_grid_loguniform_is_geomspace() -> None:
    d = Dim("lr", "loguniform", (), 1e-5, 1e-1)
    assert d.grid(5) == pytest.approx((1e-5, 1e-4, 1e-3, 1e-2, 1e-1), rel=1e-6)
    values = d.grid(7)
    ratios = np.array(values[1:]) / np.array(values[:-1])
    assert np.allclose(ratios, ratios[0], rtol=1e-5)  # constant ratio, not constant step
    assert all(type(v) is float for v in values)


def test_grid_uniform_is_linspace() -> None:
    d = Dim("momentum", "uniform", (), 0.0, 0.9)
    assert d.grid(4) == pytest.approx((0.0, 0.3, 0.6, 0.9))


def test_grid_int_range_unique() -> None:
    d = Dim("rotation", "int", (), 0, 3)
    values = d.grid(10)  # more points than integers: duplicates are dropped
    assert values == (0, 1, 2, 3)
    assert all(type(v) is int for v in values)
    assert Dim("rotation", "int", (), 0, 30).grid(4) == (0, 10, 20, 30)


def test_grid_choice_ignores_points() -> None:
    d = Dim("optimizer", "choice", ("adam", "sgd"))
    assert d.grid(10) == ("adam", "sgd")


# --------------------------------------------------------------------------- converters


def test_to_tune_types_and_sampling(mixed: SearchSpace) -> None:
    from ray import tune  # noqa: F401  (the converter imports it too)
    from ray.tune.search.sample import Categorical, Float, Integer

    from service.backends.tune.spaces import to_tune

    domains = to_tune(mixed)
    assert set(domains) == {"optimizer", "lr", "momentum", "rotation"}
    assert isinstance(domains["optimizer"], Categorical)
    assert isinstance(domains["lr"], Float)
    assert type(domains["lr"].get_sampler()).__name__ == "_LogUniform"
    assert (domains["lr"].lower, domains["lr"].upper) == (1e-5, 1e-1)
    assert isinstance(domains["momentum"], Float)
    assert type(domains["momentum"].get_sampler()).__name__ == "_Uniform"
    assert isinstance(domains["rotation"], Integer)
    # randint's upper bound is exclusive, so the inclusive 30 needs upper = 31.
    assert (domains["rotation"].lower, domains["rotation"].upper) == (0, 31)

    np.random.seed(0)
    n = 2000
    opts = domains["optimizer"].sample(size=n)
    assert set(opts) == {"adam", "sgd"}
    lrs = np.asarray(domains["lr"].sample(size=n))
    assert lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    assert abs(math.log10(np.median(lrs)) + 3) < 0.1  # log-uniform
    moms = np.asarray(domains["momentum"].sample(size=n))
    assert moms.min() >= 0.5 and moms.max() <= 0.99
    rots = np.asarray(domains["rotation"].sample(size=n))
    assert rots.min() == 0 and rots.max() == 30


def test_to_skopt_dims(mixed: SearchSpace) -> None:
    from skopt.space import Categorical, Integer, Real

    dims = {d.name: d for d in mixed.to_skopt()}
    assert list(dims) == ["optimizer", "lr", "momentum", "rotation"]
    assert isinstance(dims["optimizer"], Categorical)
    assert tuple(dims["optimizer"].categories) == ("adam", "sgd")
    assert isinstance(dims["lr"], Real)
    assert dims["lr"].prior == "log-uniform"
    assert (dims["lr"].low, dims["lr"].high) == (1e-5, 1e-1)
    assert isinstance(dims["momentum"], Real)
    assert dims["momentum"].prior == "uniform"
    assert isinstance(dims["rotation"], Integer)
    assert (dims["rotation"].low, dims["rotation"].high) == (0, 30)

    rng = np.random.RandomState(0)
    for d in dims.values():
        for v in d.rvs(200, random_state=rng):
            assert mixed[d.name].contains(v.item() if isinstance(v, np.generic) else v)


def test_to_pb2_bounds(mixed: SearchSpace) -> None:
    bounds = mixed.to_pb2_bounds()
    # Categorical dimensions have no continuous bounds; lr becomes log10_lr.
    assert bounds == {
        "log10_lr": [pytest.approx(-5.0), pytest.approx(-1.0)],
        "momentum": [0.5, 0.99],
        "rotation": [0.0, 30.0],
    }
    assert "lr" not in bounds
    assert default_space().to_pb2_bounds() == {
        "log10_lr": [pytest.approx(-5.0), pytest.approx(-1.0)]
    }


# --------------------------------------------------------------------------- space structure


def test_constants_and_searched_split(mixed: SearchSpace) -> None:
    assert mixed.constants == {"batch_size": 128, "flip": True}
    assert [d.name for d in mixed.searched] == ["optimizer", "lr", "momentum", "rotation"]
    assert mixed["flip"].kind == "choice" and mixed["flip"].is_constant
    assert mixed.names == tuple(MIXED)
    with pytest.raises(KeyError):
        mixed["zoom"]


def test_with_overrides_replaces_in_place_and_appends(mixed: SearchSpace) -> None:
    fixed = mixed.with_overrides(optimizer="sgd", weight_decay=1e-4)
    assert fixed.names == (*MIXED, "weight_decay")
    assert fixed["optimizer"] == Dim("optimizer", "constant", ("sgd",))
    assert fixed.constants == {"optimizer": "sgd", "batch_size": 128, "flip": True,
                               "weight_decay": 1e-4}
    assert "optimizer" not in [d.name for d in fixed.searched]
    # The original is untouched (frozen dataclass, new tuple).
    assert mixed["optimizer"].kind == "choice"
    with pytest.raises(SpaceError):
        mixed.with_overrides(optimizer="lbfgs")


def test_without(mixed: SearchSpace) -> None:
    smaller = mixed.without("lr", "flip", "not_there")
    assert smaller.names == ("optimizer", "momentum", "rotation", "batch_size")
    assert mixed.names == tuple(MIXED)


@pytest.mark.parametrize("raw", [MIXED, DEFAULT_SPACE])
def test_to_dict_round_trip(raw: dict) -> None:
    space = SearchSpace.from_dict(raw)
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space
    assert again.to_dict() == space.to_dict()


def test_to_dict_forms(mixed: SearchSpace) -> None:
    out = mixed.to_dict()
    assert out["batch_size"] == 128
    assert out["flip"] == {"choice": [True]}
    assert out["optimizer"] == {"choice": ["adam", "sgd"]}
    assert out["lr"] == {"loguniform": [1e-5, 1e-1]}
    assert out["rotation"] == {"int": [0, 30]}


def test_default_space_matches_catalogue() -> None:
    space = default_space()
    assert set(space["optimizer"].choices) <= set(OPTIMIZERS)
    assert space["rotation"].choices == ROTATIONS
    assert space.constants == {}


# --------------------------------------------------------------------------- resolve_config


def test_resolve_config_fills_defaults() -> None:
    out = resolve_config({})
    assert out == {name: spec.default for name, spec in HPARAMS.items() if spec.filled}
    # per-layer names and the epoch budget stay out unless set: the backbone (the run) decides
    assert "conv1_filters" not in out and "epochs" not in out
    assert resolve_config({"conv1_filters": 32.0, "epochs": 3}) == {
        **out, "conv1_filters": 32, "epochs": 3}


def test_resolve_config_log10_and_numpy() -> None:
    out = resolve_config({
        "log10_lr": np.float64(-2.5),
        "flip": np.bool_(True),
        "rotation": np.int64(20),
        "momentum": np.float32(0.5),
        "optimizer": np.str_("sgd"),
        "extra": "kept",
    })
    assert out["lr"] == pytest.approx(10 ** -2.5)
    assert "log10_lr" not in out
    assert out["flip"] is True
    assert out["rotation"] == 20 and type(out["rotation"]) is int
    assert out["momentum"] == 0.5 and type(out["momentum"]) is float
    assert out["optimizer"] == "sgd"
    assert out["extra"] == "kept"
    for name in out:
        assert not isinstance(out[name], np.generic), name
    # log10_ of an unknown name is left alone
    assert resolve_config({"log10_foo": -1})["log10_foo"] == -1


def test_resolve_config_rounds_int_hparams() -> None:
    out = resolve_config({"batch_size": 63.7, "rotation": np.float64(9.6), "lr": 1.0})
    assert out["batch_size"] == 64 and type(out["batch_size"]) is int
    assert out["rotation"] == 10 and type(out["rotation"]) is int
    assert type(out["lr"]) is float  # real hyperparameters are not rounded
    out = resolve_config({"log10_batch_size": 2.0})  # PB2 on a log-scaled int
    assert out["batch_size"] == 100 and type(out["batch_size"]) is int


# --------------------------------------------------------------------------- contains


def test_contains_is_type_strict_for_choices() -> None:
    flip = parse_dim("flip", [False, True])
    assert flip.contains(True) and flip.contains(False)
    assert not flip.contains(1) and not flip.contains(0)
    rot = parse_dim("rotation", [0, 1, 10])
    assert rot.contains(1) and rot.contains(0)
    assert not rot.contains(True) and not rot.contains(False)
    opt = parse_dim("optimizer", ["adam"])
    assert opt.contains("adam") and not opt.contains("sgd")


def test_contains_ranges() -> None:
    lr = parse_dim("lr", {"loguniform": [1e-5, 1e-1]})
    assert lr.contains(1e-5) and lr.contains(1e-1) and lr.contains(1e-3)
    assert not lr.contains(0.2) and not lr.contains(1e-6)
    assert not lr.contains("fast") and not lr.contains(None)
    rot = parse_dim("rotation", {"int": [0, 30]})
    assert rot.contains(30) and rot.contains(np.int64(5)) and rot.contains(5.0)
    assert not rot.contains(5.5) and not rot.contains(31)


def test_space_contains_ignores_missing_names(mixed: SearchSpace) -> None:
    assert mixed.contains({"optimizer": "adam"})
    assert mixed.contains({"unrelated": object()})
    assert not mixed.contains({"optimizer": "rmsprop"})
    assert not mixed.contains({"batch_size": 64})
