"""The search space: one definition, converted for every searcher.

A space maps hyperparameter names to dimensions. Names come from a fixed catalogue
(`HPARAMS`) that the trainable understands, so a typo fails before Ray starts. Architecture
hyperparameters (the backbone width, later per-layer choices of seed 001) are ordinary
dimensions of the same space, so searchers that choose them need no special path.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.core.api import did_you_mean, plain

Kind = Literal["choice", "loguniform", "uniform", "int", "constant"]
KINDS: tuple[str, ...] = ("choice", "loguniform", "uniform", "int", "constant")

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "rmsprop", "adamw", "sam")
"""EMERALD-O section 2.1: {Adam, SGD, RMSprop}; AdamW and SAM (seed 004) as options."""

OPTIMIZER_LR: dict[str, float] = {"sgd": 0.1, "sam": 0.1, "adam": 1e-3, "adamw": 1e-3,
                                  "rmsprop": 1e-3}
"""Each optimizer's own learning rate where one optimizer runs at a fixed rate (document
004 gives none): SGD with momentum 0.9 at 0.1 as He et al. train ResNet on CIFAR-10, SAM at
its SGD base's rate as Foret et al. do, Adam (and AdamW, RMSprop) at Kingma and Ba's 1e-3."""

ROTATIONS: tuple[int, ...] = (0, 10, 20, 30)
"""Rotation ranges in degrees, EMERALD-O Figs 10-12."""

LOG10_PREFIX = "log10_"
"""A dimension `log10_lr` in a trial config means lr = 10 ** value (used by PB2, whose
bounds are continuous and sampled uniformly)."""


class SpaceError(ValueError):
    """A search space entry that the trainable or a searcher cannot use."""


@dataclass(frozen=True)
class HParam:
    """One tunable name the trainable understands: its value type, default and bounds."""

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    allowed: tuple[Any, ...] | None = None
    help: str = ""
    filled: bool = True
    """Whether `resolve_config` fills the default into every trial config; the per-layer
    names and `epochs` are not filled: absent, the backbone (or the run) decides."""
    in_trial: bool = True
    """Whether a running trial can take a new value (a controller's switch, a PBT/PB2
    explore). The architecture (width, per-layer shapes) and the trial's epoch budget are
    fixed when it starts: new shapes would not fit the weights it carries on."""


HPARAMS: dict[str, HParam] = {
    "flip": HParam(bool, False, help="random horizontal flip (EMERALD-O Table 4)"),
    "rotation": HParam(int, 0, 0, 180, help="max rotation in degrees (EMERALD-O Figs 10-12)"),
    "shift": HParam(bool, False, help="random shift up to 10% (EMERALD-O Table 4)"),
    "zoom": HParam(bool, False, help="random zoom in [0.9, 1.1] (EMERALD-O Table 3)"),
    "trivialaugment": HParam(bool, False, help="TrivialAugmentWide instead of the above"),
    "optimizer": HParam(str, "adam", allowed=OPTIMIZERS, help="optimizer name"),
    "lr": HParam(float, 1e-3, 1e-7, 10.0, help="learning rate"),
    "momentum": HParam(float, 0.9, 0.0, 0.999, help="momentum for SGD / RMSprop / SAM"),
    "weight_decay": HParam(float, 0.0, 0.0, 1.0, help="L2 weight decay"),
    "batch_size": HParam(int, 64, 1, 65536, help="mini-batch size"),
    "width": HParam(float, 1.0, 0.01, 4.0, in_trial=False,
                    help="backbone width multiplier (architecture)"),
    "label_smoothing": HParam(float, 0.0, 0.0, 0.5, help="cross-entropy label smoothing"),
    # Continuous magnitudes for HYPERA's regularization, data and loss agents.
    "dropout": HParam(float, 0.0, 0.0, 0.9, help="dropout on the classifier's input, on top "
                      "of the backbone's own (HYPERA, regularization)"),
    "flip_prob": HParam(float, 0.0, 0.0, 1.0, help="horizontal flip probability; above 0 it "
                        "replaces flip's 0.5 (HYPERA, data)"),
    "shift_frac": HParam(float, 0.0, 0.0, 0.5, help="max shift as a fraction of the side; "
                         "above 0 it replaces shift's 0.1 (HYPERA, data)"),
    "zoom_frac": HParam(float, 0.0, 0.0, 0.5, help="zoom factors in [1 - z, 1 + z]; above 0 "
                        "it replaces zoom's 0.1 (HYPERA, data)"),
    "focal_gamma": HParam(float, 0.0, 0.0, 5.0, help="focal loss gamma (Lin et al.; 0: plain "
                          "cross-entropy; HYPERA, loss)"),
    "epochs": HParam(int, None, 1, 100_000, filled=False, in_trial=False,
                     help="this trial's epoch budget, at most the run's (Syne Tune's "
                          "max_resource_attr; Iranfar et al.'s epochs per episode)"),
}

# Per-layer architecture names of the searchable VGG-16 (Iranfar et al. sections V-A/B and
# Table III): conv<i>_filters / conv<i>_kernel / conv<i>_stride for its 13 convolutions,
# pool<j>_size for its 5 max-pools, dense_units for its one hidden dense layer.

VGG16_FILTERS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512,
                                  512)
"""The original VGG-16's kernels per convolution (Simonyan and Zisserman, configuration D)."""
VGG16_LAYERS: tuple[str, ...] = (
    "conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5", "conv6", "conv7", "pool3",
    "conv8", "conv9", "conv10", "pool4", "conv11", "conv12", "conv13", "pool5", "dense")
"""The searchable VGG-16's layers from input to output: Iranfar et al.'s agents, in order."""
LAYER_FIELDS: dict[str, tuple[str, ...]] = {"conv": ("filters", "kernel", "stride"),
                                            "pool": ("size",), "dense": ("units",)}
"""Each layer type's hyperparameters: one agent chooses a tuple of them (Iranfar et al. V-B)."""
VGG16_ORIGINAL: dict[str, int] = {"kernel": 3, "stride": 1, "size": 2, "units": 512}
"""The original hyperparameters besides the filters: 3x3 stride-1 convolutions, 2x2 pools,
and the 512-unit dense layer of the usual CIFAR VGG-16 (about 60 MB with 100 classes, the
size Iranfar et al. Table V gives the original)."""
TABLE_III_VGG16: dict[str, tuple[int, ...]] = {
    "filters": (16, 32, 64, 128, 256), "kernel": (3, 5), "stride": (1, 2), "size": (2, 3),
    "units": (128, 256, 512, 1024, 2048, 4096)}
"""Iranfar et al. Table III, row VGG-16: the values each per-layer hyperparameter takes."""
_LAYER_BOUNDS: dict[str, tuple[int, int]] = {"filters": (1, 4096), "kernel": (1, 11),
                                             "stride": (1, 4), "size": (1, 8),
                                             "units": (1, 65536)}


def layer_kind(layer: str) -> str:
    """'conv', 'pool' or 'dense' of a layer name such as 'conv3'."""
    return layer.rstrip("0123456789")


def _layer_hparams() -> dict[str, HParam]:
    out: dict[str, HParam] = {}
    for layer in VGG16_LAYERS:
        kind = layer_kind(layer)
        for part in LAYER_FIELDS[kind]:
            default = (VGG16_FILTERS[int(layer[4:]) - 1] if part == "filters"
                       else VGG16_ORIGINAL[part])
            low, high = _LAYER_BOUNDS[part]
            out[f"{layer}_{part}"] = HParam(int, default, low, high, filled=False,
                                            in_trial=False,
                                            help=f"{layer}'s {part} (architecture, Iranfar "
                                                 f"et al.; backbone vgg16_layers)")
    return out


LAYER_HPARAMS: dict[str, HParam] = _layer_hparams()
"""The per-layer names, each with the original VGG-16's value as its default."""
HPARAMS.update(LAYER_HPARAMS)


def layer_of(name: str) -> str | None:
    """The layer a per-layer hyperparameter belongs to ('conv3' of 'conv3_kernel')."""
    return name.rpartition("_")[0] if name in LAYER_HPARAMS else None


def layer_values(config: Mapping[str, Any]) -> dict[str, int]:
    """The per-layer architecture values a (trial) config sets."""
    return {k: int(v) for k, v in config.items() if k in LAYER_HPARAMS}


def layer_space(sets: Mapping[str, tuple[int, ...]] = TABLE_III_VGG16,
                layers: tuple[str, ...] = VGG16_LAYERS) -> dict[str, Any]:
    """A YAML space searching `layers` over `sets` (default: Table III's VGG-16 row); a
    hyperparameter `sets` leaves out keeps the original's value."""
    return {f"{layer}_{part}": {"choice": list(sets[part])}
            for layer in layers for part in LAYER_FIELDS[layer_kind(layer)] if part in sets}


def check_hparam_name(name: str) -> str:
    """Return `name` if the trainable knows it, else raise with a suggestion."""
    if name not in HPARAMS:
        known = [n for n in HPARAMS if n not in LAYER_HPARAMS]
        raise SpaceError(
            f"space.{name}: unknown hyperparameter{did_you_mean(name, HPARAMS)}; "
            f"known: {', '.join(known)}, and per layer conv<1-13>_filters|kernel|stride, "
            f"pool<1-5>_size, dense_units"
        )
    return name


def _check_value(name: str, value: Any) -> Any:
    """Validate one value of hyperparameter `name` and return it in its canonical type."""
    spec = HPARAMS[name]
    if spec.type is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise SpaceError(f"space.{name}: {value!r} is not a boolean; use true or false")
        return bool(value)
    if spec.type is str:
        if not isinstance(value, str):
            raise SpaceError(f"space.{name}: {value!r} is not a string")
        text = value.lower()
        if spec.allowed and text not in spec.allowed:
            raise SpaceError(
                f"space.{name}: {value!r} is not one of {', '.join(spec.allowed)}"
                f"{did_you_mean(text, spec.allowed)}"
            )
        return text
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise SpaceError(f"space.{name}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise SpaceError(f"space.{name}: {value!r} is not a finite number")
    if spec.type is int:
        if number != int(number):
            raise SpaceError(f"space.{name}: {value!r} is not an integer")
        number = int(number)
    if (spec.low is not None and number < spec.low) or (
        spec.high is not None and number > spec.high
    ):
        raise SpaceError(
            f"space.{name}: {value!r} is outside [{spec.low:g}, {spec.high:g}]"
        )
    return number


@dataclass(frozen=True)
class Dim:
    """One dimension: a categorical choice, a (log-)uniform range, an integer range or a
    constant. Bounds are inclusive."""

    name: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant" or (self.kind == "choice" and len(self.choices) == 1)

    @property
    def is_numeric_range(self) -> bool:
        return self.kind in ("loguniform", "uniform", "int")

    def contains(self, value: Any) -> bool:
        """Whether `value` is a value this dimension can produce."""
        if self.kind in ("choice", "constant"):
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, (bool, np.bool_, str)):
            return False
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        if self.kind == "int" and number != int(number):
            return False
        tol = 1e-9 * max(1.0, abs(self.high or 0.0))
        return self.low - tol <= number <= self.high + tol  # type: ignore[operator]

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value uniformly (log-uniformly for `loguniform`)."""
        if self.kind in ("choice", "constant"):
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        return int(rng.integers(int(self.low), int(self.high) + 1))

    def grid(self, points: int) -> tuple[Any, ...]:
        """Values for grid search: every choice, or `points` evenly spaced (log-spaced) values."""
        if self.kind in ("choice", "constant"):
            return self.choices
        if self.kind == "loguniform":
            values = np.geomspace(self.low, self.high, points)
            return tuple(float(f"{v:.6g}") for v in values)
        if self.kind == "uniform":
            return tuple(float(f"{v:.6g}") for v in np.linspace(self.low, self.high, points))
        ints = np.unique(np.round(np.linspace(self.low, self.high, points)).astype(int))
        return tuple(int(v) for v in ints)


def _check_free(name: str, value: Any) -> Any:
    """Validate a value of a hyperparameter outside the catalogue (a recorded table's own
    names): a boolean, string or finite number, returned as a plain Python value."""
    value = plain(value)
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    raise SpaceError(f"space.{name}: {value!r} is not a boolean, string or finite number")


def parse_dim(name: str, raw: Any, free: bool = False) -> Dim:
    """Read one YAML entry: a scalar (constant), a list (choice) or a one-key mapping
    `{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, `{int: [lo, hi]}`, `{choice: [...]}`.
    With `free`, any name is accepted and typed by its values (a table recorded elsewhere
    brings hyperparameters the trainer has never heard of)."""
    if not free:
        check_hparam_name(name)
    check = _check_free if free else _check_value
    if isinstance(raw, Mapping):
        if len(raw) != 1:
            raise SpaceError(
                f"space.{name}: expected one key out of {', '.join(KINDS)}, got {list(raw)}"
            )
        ((kind, arg),) = raw.items()
        if kind not in KINDS:
            raise SpaceError(
                f"space.{name}: unknown kind '{kind}'{did_you_mean(str(kind), KINDS)}; "
                f"use one of {', '.join(KINDS)}"
            )
    elif isinstance(raw, (list, tuple)):
        kind, arg = "choice", list(raw)
    else:
        kind, arg = "constant", raw
    if kind == "constant":
        return Dim(name, "constant", (check(name, arg),))
    if kind == "choice":
        if not isinstance(arg, (list, tuple)) or not arg:
            raise SpaceError(f"space.{name}: choice needs a non-empty list of values")
        values = tuple(check(name, v) for v in arg)
        if len(set(values)) != len(values):
            raise SpaceError(f"space.{name}: choice has repeated values {list(values)}")
        return Dim(name, "choice", values)
    if not isinstance(arg, (list, tuple)) or len(arg) != 2:
        raise SpaceError(f"space.{name}: {kind} needs [low, high], got {arg!r}")
    low, high = (check(name, v) for v in arg)
    if free:
        return _free_range(name, kind, low, high)
    if HPARAMS[name].type not in (int, float):
        raise SpaceError(f"space.{name}: {kind} needs a numeric hyperparameter; use choice")
    if not low < high:
        raise SpaceError(f"space.{name}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"space.{name}: loguniform needs low > 0, got {low}")
    if kind in ("uniform", "loguniform") and HPARAMS[name].type is int:
        raise SpaceError(
            f"space.{name}: {name} is an integer; use {{int: [{low}, {high}]}} or a choice"
        )
    if kind == "int":
        if HPARAMS[name].type is not int:
            raise SpaceError(f"space.{name}: int range on a real hyperparameter; use uniform")
        return Dim(name, "int", (), int(low), int(high))
    return Dim(name, kind, (), float(low), float(high))


def _free_range(name: str, kind: str, low: Any, high: Any) -> Dim:
    """A range over a name outside the catalogue: numeric bounds, low < high, integer
    bounds for `int`, positive ones for `loguniform`."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise SpaceError(f"space.{name}: {kind} needs numeric [low, high], got [{low}, {high}]")
    if not low < high:
        raise SpaceError(f"space.{name}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"space.{name}: loguniform needs low > 0, got {low}")
    if kind == "int":
        if float(low) != int(low) or float(high) != int(high):
            raise SpaceError(f"space.{name}: int needs integer bounds, got [{low}, {high}]")
        return Dim(name, "int", (), int(low), int(high))
    return Dim(name, kind, (), float(low), float(high))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of dimensions; constants are kept apart from what searchers see."""

    dims: tuple[Dim, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], free: bool = False) -> SearchSpace:
        """The space of a YAML mapping; `free` accepts names outside the catalogue."""
        return cls(tuple(parse_dim(name, value, free) for name, value in raw.items()))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, so a space round-trips through a config file."""
        out: dict[str, Any] = {}
        for d in self.dims:
            if d.kind == "constant":
                out[d.name] = d.choices[0]
            elif d.kind == "choice":
                out[d.name] = {"choice": list(d.choices)}
            else:
                out[d.name] = {d.kind: [d.low, d.high]}
        return out

    def __iter__(self) -> Iterator[Dim]:
        return iter(self.dims)

    def __getitem__(self, name: str) -> Dim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    @property
    def searched(self) -> tuple[Dim, ...]:
        """Dimensions a searcher decides."""
        return tuple(d for d in self.dims if not d.is_constant)

    @property
    def in_trial(self) -> tuple[Dim, ...]:
        """Searched dimensions a running trial can change (PBT's and PB2's explore); a name
        outside the catalogue (a replay table's own) is taken as changeable."""
        return tuple(d for d in self.searched
                     if d.name not in HPARAMS or HPARAMS[d.name].in_trial)

    @property
    def constants(self) -> dict[str, Any]:
        """Fixed values: they go into Tune's param_space, which merges them into every
        suggestion (several Ray searchers drop constants from their own spaces)."""
        return {d.name: d.choices[0] for d in self.dims if d.is_constant}

    def with_overrides(self, **values: Any) -> SearchSpace:
        """A copy with some names fixed to constants (e.g. a baseline's fixed optimizer)."""
        fixed = {name: parse_dim(name, value) for name, value in values.items()}
        dims = [fixed.pop(d.name, d) for d in self.dims]
        return SearchSpace(tuple(dims) + tuple(fixed.values()))

    def without(self, *names: str) -> SearchSpace:
        return SearchSpace(tuple(d for d in self.dims if d.name not in names))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random configuration of the searched dimensions."""
        return {d.name: d.sample(rng) for d in self.searched}

    def grid(self, points: int, per_name: Mapping[str, int] | None = None
             ) -> list[dict[str, Any]]:
        """The full factorial grid over the searched dimensions, in a fixed order;
        `per_name` overrides `points` for some ranges."""
        dims = self.searched
        per_name = per_name or {}
        return [
            dict(zip([d.name for d in dims], values, strict=True))
            for values in itertools.product(*(d.grid(per_name.get(d.name, points))
                                              for d in dims))
        ]

    def contains(self, config: Mapping[str, Any]) -> bool:
        return all(d.contains(config[d.name]) for d in self.dims if d.name in config)

    # Converters, one per searcher family (Tune's domains: service.backends.tune.spaces).

    def to_skopt(self) -> list[Any]:
        """scikit-optimize dimensions for the searched dimensions."""
        from skopt.space import Categorical, Integer, Real

        out: list[Any] = []
        for d in self.searched:
            if d.kind == "choice":
                out.append(Categorical(list(d.choices), name=d.name, transform="onehot"))
            elif d.kind == "loguniform":
                out.append(Real(d.low, d.high, prior="log-uniform", name=d.name))
            elif d.kind == "uniform":
                out.append(Real(d.low, d.high, name=d.name))
            else:
                out.append(Integer(int(d.low), int(d.high), name=d.name))
        return out

    def to_pb2_bounds(self) -> dict[str, list[float]]:
        """PB2's continuous bounds over what a running trial can change: log-scaled
        dimensions become `log10_<name>`, because PB2 samples its bounds uniformly."""
        bounds: dict[str, list[float]] = {}
        for d in self.in_trial:
            if d.kind == "loguniform":
                bounds[LOG10_PREFIX + d.name] = [math.log10(d.low), math.log10(d.high)]
            elif d.kind in ("uniform", "int"):
                bounds[d.name] = [float(d.low), float(d.high)]
        return bounds


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a trial config into concrete hyperparameters: defaults for missing names,
    `log10_x` into `x`, numpy scalars into plain Python values."""
    out: dict[str, Any] = {}
    for key, value in plain(dict(config)).items():
        if key.startswith(LOG10_PREFIX) and key[len(LOG10_PREFIX):] in HPARAMS:
            key, value = key[len(LOG10_PREFIX):], 10.0 ** float(value)
        out[key] = value
    for name, spec in HPARAMS.items():
        if not spec.filled and name not in out:
            continue
        value = out.get(name, spec.default)
        if spec.type is int and isinstance(value, float):
            value = int(round(value))
        out[name] = value
    return out


DEFAULT_SPACE: dict[str, Any] = {
    "flip": {"choice": [False, True]},
    "rotation": {"choice": list(ROTATIONS)},
    "shift": {"choice": [False, True]},
    "zoom": {"choice": [False, True]},
    "optimizer": {"choice": ["adam", "sgd", "rmsprop"]},
    "lr": {"loguniform": [1e-5, 1e-1]},
}
"""EMERALD-O's space (seed 000 sections 2.1, 4.1-4.4, Figs 10-13): augmentation flags and
rotation range for Agent 1; optimizer and log-uniform learning rate for Agent 2. Batch size
and weight decay are optional dimensions a config may add."""


def default_space() -> SearchSpace:
    return SearchSpace.from_dict(DEFAULT_SPACE)
