"""The experiment configuration: one typed, validated model for YAML, CLI flags and the Ray
job entrypoint. Everything after `load_config` trusts it.

Bad input raises `ConfigError` with one line naming the field, the bad value and what is
accepted; nothing has been started or written at that point.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from service.core import registry
from service.core.api import DATASETS, Budget, ConfigError, Strict, did_you_mean
from service.core.space import DEFAULT_SPACE, SearchSpace, SpaceError

__all__ = ["Budget", "ConfigError", "ExperimentConfig", "build_config", "load_config"]

METRICS: dict[str, str] = {"val_acc": "max", "val_loss": "min", "reward": "max"}
"""Metrics a searcher can optimise; `reward` is Iranfar et al.'s eq. 2 (needs `reward:`)."""


DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 32, 10), "synthetic": (3, 16, 10), "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100), "fashion_mnist": (1, 28, 10), "imagefolder": (3, 32, 10)}
"""(channels, default image size, classes) of each data set, for checking a user backbone
on a dummy batch when the config is read (an image folder's classes are counted; its channels
are taken as 3)."""


class DatasetConfig(Strict):
    """Which data, where it lives and how it is split."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    image_size: int | None = Field(default=None, ge=4, le=512)
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    max_train: int | None = Field(default=None, ge=10)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return one_of(value, list(DATASETS), "dataset")

    @model_validator(mode="after")
    def _root_for_files(self) -> DatasetConfig:
        if self.name in ("cifar10", "fashion_mnist", "cifar100", "imagefolder") \
                and not self.root:
            raise ValueError(
                f"dataset {self.name!r} reads files: set dataset.root to the folder holding them"
            )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9")
        n = BUNDLED_SIZES.get(self.name)
        for field, fraction in (("val_fraction", self.val_fraction),
                                ("test_fraction", self.test_fraction)):
            if n is not None and round(n * fraction) < 1:
                raise ValueError(f"{field}: {fraction:g} of {self.name}'s {n} images is none; "
                                 f"give at least {1 / n:.2g}")
        return self


def one_of(value: str, accepted: list[str], what: str) -> str:
    """`value` if it is one of `accepted`, else the one-line error with a suggestion."""
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}{did_you_mean(value, accepted)}; "
                         f"accepted: {', '.join(accepted)}")
    return value


BUNDLED_SIZES = {"digits": 1797, "synthetic": 600}
"""Images in the data sets without files (scikit-learn's digits, service.training.data's synthetic
set), so a split too small to hold one is refused with the config."""


RAY_UNIT = 1e-4
"""Ray schedules resources in steps of 0.0001 (its fixed-point resource quantities)."""


class Resources(Strict):
    """Resources of one trial: whole or fractional CPUs and GPUs."""

    cpus: float = Field(default=1.0, ge=RAY_UNIT, le=512)
    gpus: float = Field(default=0.0, ge=0.0, le=64)

    @field_validator("gpus")
    @classmethod
    def _fraction_or_whole(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("more than one GPU per trial must be a whole number")
        return value

    @field_validator("cpus", "gpus")
    @classmethod
    def _ray_units(cls, value: float) -> float:
        if abs(value / RAY_UNIT - round(value / RAY_UNIT)) > 1e-6:
            raise ValueError(f"{value:g} is finer than Ray schedules; give a multiple of "
                             f"{RAY_UNIT:g}")
        return value


class RecordConfig(Strict):
    """The design `python -m service record` trains: the grid of the discretised space
    (`points` values per range, `points_per` per name, log-spaced on log ranges), or
    `samples` seeded samples of the space."""

    points: int = Field(default=3, ge=2, le=1000)
    points_per: dict[str, int] = {}
    samples: int | None = Field(default=None, ge=1, le=1_000_000)
    out: str | None = None
    tag: str | None = Field(default=None, pattern=r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$")
    """Appended to the table's file name (`digits-resnet18_w0.0625-optsel.parquet`)."""

    @model_validator(mode="after")
    def _grid_or_samples(self) -> RecordConfig:
        # compared with the default, not with the keys given: a stored config holds them all
        grid = self.points != type(self).model_fields["points"].default
        if self.samples is not None and (self.points_per or grid):
            knob = "points_per" if self.points_per else "points"
            raise ValueError(f"record.{knob}: sets the grid, which record.samples replaces "
                             f"(seeded samples of the space); give one of them")
        return self

    @field_validator("points_per", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        for name, points in (value.items() if isinstance(value, dict) else ()):
            if isinstance(points, bool) or not isinstance(points, int) or points < 2:
                raise ValueError(f"points_per.{name}: {points!r} must be an integer >= 2")
        return value


class PerfConfig(Strict):
    """How trials run on their device (`service.training.trainer.Perf`), never what they learn:
    bf16 autocast and channels-last are on by default on CUDA and off on the CPU (`on` /
    `bf16` force them); `compile` runs the model through torch.compile. Evaluation passes
    run in `eval_channels_last` (auto: the training layout, on the CPU channels-last for
    convs of 8 channels or more, where it is faster), `eval_batch_size` images at a time
    (0: 512, but 128 on the CPU where a stem convolution's output per image reaches 4,096
    values, where smaller batches measured faster). `report_ahead`: a trial trains its next
    epoch while Tune takes the last one's report (Tune holds a function trainable until its
    driver handled each result); a trial stopped or paused at that report loses only the
    work done meanwhile. Off for trials with an in-trial controller, which decide between
    epochs."""

    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    eval_channels_last: Literal["auto", "on", "off"] = "auto"
    eval_batch_size: int = Field(default=0, ge=0, le=1_000_000)
    report_ahead: bool = True


class TerminationConfig(Strict):
    """Iranfar et al. section V-E's early termination, applied to every searcher's trials
    alike: batches slower than `batch_time_s` (t_th) for `batch_patience` (N_th,t)
    consecutive batches end a trial at once; training loss above `loss` (l_th) for
    `loss_patience` (N_th,l) consecutive epochs restarts it from fresh initial weights
    `restarts` times, then ends it. A terminated trial is a failure (eq. 2: reward -1).
    0 turns a rule off (the default: no termination)."""

    batch_time_s: float = Field(default=0.0, ge=0.0)
    batch_patience: int = Field(default=3, ge=1, le=1_000_000)
    loss: float = Field(default=0.0, ge=0.0)
    loss_patience: int = Field(default=3, ge=1, le=10_000)
    restarts: int = Field(default=1, ge=0, le=100)

    @property
    def active(self) -> bool:
        return self.batch_time_s > 0 or self.loss > 0


class RewardConfig(Strict):
    """Iranfar et al. eq. 2 as the reported metric `reward`: c_acc x val_acc - (1 - c_acc) x
    model MB / size_ref_mb, -1 when terminated. The document gives no coefficients; the size
    reference is our reading (its rewards cannot fit its range with raw MB)."""

    c_acc: float = Field(default=0.5, ge=0.0, le=1.0)
    size_ref_mb: float = Field(default=100.0, gt=0.0)


MAX_SEED = 2**32 - 1
"""Seeds reach numpy's and Ray Tune's seeding, which take 32-bit unsigned integers."""
MAX_SEEDS = 10_000


class ObjectiveConfig(Strict):
    """One objective of a multi-objective experiment: a row column (`OBJECTIVE_METRICS`),
    whether it is maximised or minimised, and optionally the range it is normalised over
    for the scalarisation (accuracies have one; 0 to the reference point for a minimised
    quantity otherwise)."""

    metric: str
    mode: str | None = None
    bounds: list[float] | None = None

    @field_validator("metric")
    @classmethod
    def _reported(cls, value: str) -> str:
        from service.core.objectives import FINAL_ONLY, OBJECTIVE_METRICS

        if value in FINAL_ONLY:
            raise ValueError(f"{value!r} is measured only by the final test, no trial row "
                             f"reports it; use {FINAL_ONLY[value]}")
        return one_of(value, list(OBJECTIVE_METRICS), "metric")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value is not None and value not in ("max", "min"):
            raise ValueError(f"{value!r} is not max or min; give mode: max or mode: min")
        return value

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or value[0] >= value[1]):
            raise ValueError(f"{value} must be [low, high] with low < high")
        return value

    @property
    def direction(self) -> str:
        """The mode given, else the metric's usual one."""
        from service.core.objectives import OBJECTIVE_METRICS

        return self.mode or OBJECTIVE_METRICS[self.metric][0]


class ScalarisationConfig(Strict):
    """How single-objective searchers and schedulers see several objectives: `parego`
    (Knowles 2006 ParEGO: an augmented Chebyshev function with a weight vector from a
    seeded simplex lattice per trial) or `weights` (the same function, fixed weights, one
    per objective)."""

    kind: Literal["parego", "weights"] = "parego"
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights_for_kind(self) -> ScalarisationConfig:
        if self.kind == "weights" and not self.weights:
            raise ValueError("scalarisation.weights: kind weights needs one weight per "
                             "objective, e.g. weights: [0.7, 0.3]")
        if self.kind == "parego" and self.weights is not None:
            raise ValueError("scalarisation.weights: ParEGO draws its weights per trial; "
                             "give kind: weights to fix them, or remove weights")
        if self.weights is not None and (any(w < 0 for w in self.weights)
                                         or sum(self.weights) <= 0):
            raise ValueError(f"scalarisation.weights: {self.weights} must be >= 0 with a "
                             "positive sum")
        return self


class ReplayConfig(Strict):
    """The replay backend: recorded tables to run every searcher against, on a simulated
    clock; `time_budget_s` ends each experiment at that simulated wall time."""

    tables: list[str] = []
    time_budget_s: float | None = Field(default=None, gt=0)
    workers: int | None = Field(default=None, ge=1, le=1024)
    paired: list[str] = []
    """`"a vs b"`: pairs of searchers the report compares seed by seed (paired.md)."""
    continuation: Literal["reach", "epoch", "restart"] = "reach"
    """Where a trial whose hyperparameters change inside it continues the new configuration's
    curve (service.backends.replay.continuation): where that curve first reaches the trial's value,
    at the current epoch (the old model), or from epoch 1."""
    verify: bool = True
    """Retrain each in-trial cell's chosen schedule for real where the table's recording can
    be repeated (service.backends.replay.verify), and rank in-trial rows by that score."""
    searcher_time: bool = True
    """The searcher's and scheduler's own compute advances the simulated clock."""
    space: Literal["grid", "continuous"] = "grid"
    """grid: every searched dimension is a choice among the table's recorded values, sorted
    (numeric ones ordered; strings and booleans keep the space's order); continuous: the
    table's ranges, suggestions snapped to the nearest recorded value (counted). PB2 keeps
    the ranges in either mode (`Entry.continuous_space`)."""


class ExperimentConfig(Strict):
    """A comparison of searchers x backbones x seeds under one storage path."""

    name: str = "emerald"
    dataset: DatasetConfig = DatasetConfig()
    backbones: list[str] = ["resnet18@0.25"]
    searchers: list[str] = ["random"]
    searcher_options: dict[str, dict[str, Any]] = {}
    budget: Budget = Budget()
    concurrency: int = Field(default=2, ge=1, le=10_000)
    max_parallel_experiments: int | None = Field(default=None, ge=1, le=10_000)
    """Experiments (cells) run side by side; default: as many as trial slots."""
    resources: Resources = Resources()
    seeds: list[int] = [0]
    storage: str = "results"
    space: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPACE))
    metric: str = "val_acc"
    final_test: bool = True
    final_test_reuse: bool = True
    """The final test scores the best trial's own final weights where retraining would
    reproduce them (service.backends.tune.experiment.trained_weights); false: it always retrains."""
    weights: dict[str, str] = {}
    max_failures: int = Field(default=1, ge=0, le=100)
    reuse_actors: bool = True
    shared_driver: bool = True
    """The cells of searchers (with or without a Tune scheduler) run in one Tune driver,
    whose trial actors serve cell after cell (service.backends.tune.shared); false: every cell is a
    Tune experiment of its own."""
    warm_pool: bool = True
    """CPU trials train in warm processes, one per trial slot and node, kept for the whole
    run (service.backends.tune.warm); false: each experiment's trials start their own processes."""
    keep_checkpoints: int = Field(default=2, ge=1, le=1000)
    dashboard: bool = True
    """Every cell's trials go into `<experiment>/optuna.journal` while the run goes on (on
    the driver, off the trials' path), for `python -m service dashboard <experiment>`
    (optuna-dashboard); false: no journal."""
    mlflow: bool = False
    """Ray Tune's MLflowLoggerCallback logs every trial of the Tune backend as an MLflow
    run, tagged with its searcher, backbone and seed, in `<experiment>/mlflow.db`
    (MLFLOW_TRACKING_URI when set), MLflow experiment = the config's name. Needs the
    `mlflow` extra: pip install -e ".[mlflow]"."""
    backend: Literal["tune", "replay"] = "tune"
    record: RecordConfig = RecordConfig()
    replay: ReplayConfig = ReplayConfig()
    termination: TerminationConfig = TerminationConfig()
    perf: PerfConfig = PerfConfig()
    reward: RewardConfig | None = None
    objectives: list[ObjectiveConfig] | None = None
    """Several metrics to optimise at once (docs/multi-objective.md); `metric` and `mode`
    are then the first objective's."""
    reference: list[float] | None = None
    """The hypervolume reference point, one value per objective (worse than any point
    counted); without it the report takes the observed worst plus a tenth of the range."""
    scalarisation: ScalarisationConfig = ScalarisationConfig()

    @model_validator(mode="before")
    @classmethod
    def _metric_from_objectives(cls, data: Any) -> Any:
        """With objectives, `metric` is the first objective's (given or not)."""
        if not isinstance(data, dict) or not isinstance(data.get("objectives"), list):
            return data
        first = data["objectives"][0] if data["objectives"] else None
        if isinstance(first, dict) and isinstance(first.get("metric"), str):
            given = data.get("metric")
            if given is not None and given != first["metric"]:
                raise ValueError(f"metric: with objectives, the metric is the first "
                                 f"objective's ({first['metric']!r}); remove metric or put "
                                 f"{given!r} first")
            data = {**data, "metric": first["metric"]}
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
            raise ValueError(
                f"{value!r} is not a safe folder name; use letters, digits, '.', '_' or '-'"
            )
        return value

    @field_validator("backbones")
    @classmethod
    def _backbones(cls, value: list[str]) -> list[str]:
        from service.core.backbone_spec import BackboneError, BackboneSpec

        if not value:
            raise ValueError("give at least one backbone, e.g. ['resnet18@0.25']")
        try:
            specs = [str(BackboneSpec.parse(v)) for v in value]
        except BackboneError as err:
            raise ValueError(str(err).removeprefix("backbone: ")) from None
        if len(set(specs)) != len(specs):
            raise ValueError(f"repeated backbone in {value}")
        return specs

    @field_validator("searchers")
    @classmethod
    def _searchers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one searcher, e.g. ['random', 'optuna']")
        try:
            names = [registry.check_name(v) for v in value]
        except registry.RegistryError as err:
            raise ValueError(str(err)) from None
        if len(set(names)) != len(names):
            raise ValueError(f"repeated searcher in {value}")
        return names

    @model_validator(mode="after")
    def _weights(self) -> ExperimentConfig:
        for backbone, path in self.weights.items():
            if backbone not in self.backbones:
                raise ValueError(
                    f"weights.{backbone}: not one of backbones {self.backbones}"
                    f"{did_you_mean(backbone, self.backbones)}"
                )
            if not Path(path).expanduser().is_file():
                raise ValueError(f"weights.{backbone}: file {path!r} not found; give a "
                                 "state dict saved with torch.save(model.state_dict(), path)")
        return self

    @field_validator("mlflow")
    @classmethod
    def _mlflow_installed(cls, value: bool) -> bool:
        import importlib.util

        if value and importlib.util.find_spec("mlflow") is None:
            raise ValueError('MLflow is not installed; pip install -e ".[mlflow]" '
                             "(mlflow==3.18.0), or set mlflow: false")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        if len(set(value)) != len(value):
            raise ValueError(f"repeated seed in {value}")
        if any(s < 0 or s > MAX_SEED for s in value):
            raise ValueError(f"seeds must be in 0..{MAX_SEED} (numpy's seed range)")
        if len(value) > MAX_SEEDS:
            raise ValueError(f"{len(value)} seeds; give at most {MAX_SEEDS}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        """The storage path must be a folder, or creatable as one: a file there (or above
        it) would fail only after Ray started."""
        path = Path(value).expanduser()
        if not value.strip():
            raise ValueError("empty; give a folder for the results (default: results)")
        long = [p for p in path.parts if len(p.encode()) > 255]
        if long:
            raise ValueError(f"the name {long[0][:40]!r}... is longer than 255 bytes, more "
                             "than a file system allows; give a shorter folder")
        for part in (path, *path.parents):
            if part.exists():
                if not part.is_dir():
                    raise ValueError(f"{str(part)!r} is a file, not a folder; give a folder "
                                     "for the results")
                break
        return value

    @model_validator(mode="after")
    def _tables_need_the_replay_backend(self) -> ExperimentConfig:
        if self.replay.tables and self.backend != "replay":
            raise ValueError("replay.tables: tables are read only by the replay backend; "
                             "add --backend replay (backend: replay), or drop --table")
        return self

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            SearchSpace.from_dict(value)
        except SpaceError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        from service.core.objectives import OBJECTIVE_METRICS

        if value in OBJECTIVE_METRICS:  # an objective's; alone it is refused below
            return value
        return one_of(value, list(METRICS), "metric")

    @model_validator(mode="after")
    def _options_and_space(self) -> ExperimentConfig:
        for name in self.searcher_options:
            if name not in self.searchers:
                raise ValueError(
                    f"searcher_options.{name}: {name!r} is not in searchers {self.searchers}"
                    f"{did_you_mean(name, self.searchers)}")
        self._check_objectives()
        if self.metric == "reward" and self.reward is None:
            raise ValueError("metric: 'reward' is Iranfar et al.'s eq. 2; add a reward section "
                             "(e.g. reward: {c_acc: 0.5, size_ref_mb: 100})")
        if self.backend == "replay":
            if self.reward is not None:
                raise ValueError("reward: a replay scores the tables' recorded metric and "
                                 "computes no reward; remove reward (or record a table that "
                                 "holds a reward column)")
            if self.mlflow:
                raise ValueError("mlflow: logs the Tune backend's trials, and a replay runs "
                                 "none; remove mlflow (its journal is on: python -m service "
                                 "dashboard)")
            if self.termination.active:
                raise ValueError("termination: a replay has no batch times or restarts; "
                                 "remove termination (record the table without it)")
            self._check_replay()
            return self
        changed = [k for k, v in ReplayConfig().model_dump().items()
                   if getattr(self.replay, k) != v]  # a stored config holds the defaults
        if changed:
            field = changed[0]
            raise ValueError(f"replay.{field}: only the replay backend reads the replay "
                             f"section; give backend: replay (or --backend replay), or remove "
                             f"replay")
        space = self.search_space
        self._check_layers(space)
        self._check_entries(lambda _: space)
        return self

    def _check_objectives(self) -> None:
        """Objectives: 2 or 3 distinct metrics, a reference and fixed weights of their
        length, and what each searcher needs: a native multi-objective entry needs
        objectives; any other searcher (or scheduler) needs the scalarised objective, so
        every objective needs normalising bounds."""
        from service.core.objectives import normalising_bounds
        from service.core.pareto import MAX_OBJECTIVES

        native = [n for n in self.searchers if registry.entry(n).multi_objective]
        if self.objectives is None:
            if self.metric not in METRICS:
                raise ValueError(f"metric: {self.metric!r} is an objective, not a metric "
                                 f"searchers optimise alone; give objectives: [...] for "
                                 f"several, or one of {', '.join(METRICS)}")
            for key in ("reference",):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: applies to objectives; add objectives: "
                                     "[{metric: val_acc, mode: max}, ...] or remove it")
            if self.scalarisation != ScalarisationConfig():
                raise ValueError("scalarisation: applies to objectives; add objectives: "
                                 "[...] or remove scalarisation")
            if native:
                raise ValueError(f"searchers.{native[0]}: a multi-objective searcher needs "
                                 "objectives, e.g. objectives: [{metric: val_acc, mode: "
                                 "max}, {metric: model_size_mb, mode: min}]")
            return
        n = len(self.objectives)
        if not 2 <= n <= MAX_OBJECTIVES:
            raise ValueError(f"objectives: {n} given; give 2 to {MAX_OBJECTIVES} (for one, "
                             "use metric: ...; hypervolume and ParEGO's lattice are exact "
                             "for 2 and 3)")
        seen: set[str] = set()
        for i, objective in enumerate(self.objectives):
            if objective.metric in seen:
                raise ValueError(f"objectives.{i}.metric: {objective.metric!r} is given "
                                 "twice; give each metric once")
            seen.add(objective.metric)
        if self.reference is not None and len(self.reference) != n:
            raise ValueError(f"reference: {len(self.reference)} values for {n} objectives; "
                             "give one per objective, in the objectives' order")
        weights = self.scalarisation.weights
        if weights is not None and len(weights) != n:
            raise ValueError(f"scalarisation.weights: {len(weights)} weights for {n} "
                             "objectives; give one per objective")
        scalarised = [name for name in self.searchers if name not in native]
        scheduled = [name for name in native
                     if self.searcher_options.get(name, {}).get("scheduler", "none") != "none"]
        users = scalarised + scheduled
        if users:
            for i, objective in enumerate(self.objectives):
                ref = self.reference[i] if self.reference is not None else None
                if normalising_bounds(objective.metric, objective.direction,
                                      objective.bounds, ref) is None:
                    who = (f"{users[0]} (single-objective)" if scalarised else
                           f"{users[0]}'s scheduler (one metric)")
                    raise ValueError(
                        f"objectives.{i}.bounds: {objective.metric} has no natural range; "
                        f"give bounds: [low, high] (or a reference point) so {who} can "
                        "optimise the scalarised objective")

    @property
    def objectives_spec(self) -> Any:
        """The objectives resolved for the backends (`service.core.objectives.Objectives`),
        None without objectives."""
        from service.core.objectives import Objectives, normalising_bounds

        if self.objectives is None:
            return None
        refs = self.reference or [None] * len(self.objectives)
        return Objectives(
            tuple(o.metric for o in self.objectives),
            tuple(o.direction for o in self.objectives),
            tuple(normalising_bounds(o.metric, o.direction, o.bounds, r)
                  for o, r in zip(self.objectives, refs, strict=True)),
            self.scalarisation.kind,
            tuple(self.scalarisation.weights) if self.scalarisation.weights else None,
            tuple(self.reference) if self.reference is not None else None)

    def _check_layers(self, space: SearchSpace) -> None:
        """Per-layer names need a backbone built from them (vgg16_layers)."""
        from service.core.backbone_spec import LAYERED
        from service.core.space import LAYER_HPARAMS

        layered = [n for n in space.names if n in LAYER_HPARAMS]
        fixed = [b for b in self.backbones if b.split("@")[0] not in LAYERED]
        if layered and fixed:
            raise ValueError(f"space.{layered[0]}: per-layer hyperparameters need backbone "
                             f"vgg16_layers, not {fixed[0]}; use backbones: "
                             f"[vgg16_layers@0.125] or remove the per-layer names")

    def _check_replay(self) -> None:
        """Tables exist and fit the format; the budget fits each; options fit each space.
        The space, metric and mode come from the tables."""
        from service.core.table import TableError, cached_table, plan_space

        if not self.replay.tables:
            raise ValueError("replay.tables: give at least one recorded table "
                             "(e.g. docs/tables/digits-vgg16_w0.0625.parquet)")
        if self.space != DEFAULT_SPACE:  # the default is no choice (a dump holds it)
            raise ValueError("space: a replay reads its space from each table; remove space "
                             "(or put it in the table's metadata or <table>.yaml)")
        try:
            names = [cached_table(t).name for t in self.replay.tables]
        except TableError as err:
            raise ValueError(f"replay.tables: {err}") from None
        if len(set(names)) != len(names):
            raise ValueError(f"replay.tables: two tables share a file name {names}")
        for pair in self.replay.paired:
            a, sep, b = (x.strip() for x in pair.partition(" vs "))
            if not sep or a not in self.searchers or b not in self.searchers:
                raise ValueError(f"replay.paired: {pair!r} must be 'a vs b', two of the "
                                 f"searchers ({', '.join(self.searchers)})")
        for path in self.replay.tables:
            table = cached_table(path)
            if self.budget.epochs > table.epochs:
                raise ValueError(f"budget.epochs: {self.budget.epochs} is more than table "
                                 f"{table.name!r} recorded ({table.epochs}); give at most "
                                 f"{table.epochs}")
            if not table.space.searched:
                raise ValueError(f"replay.tables: table {table.name!r} holds one "
                                 "configuration, so there is nothing to search; give a table "
                                 "of several")
            try:  # a table with no finite metric at the budget scores nothing
                table.optimum(self.budget.epochs)
            except TableError as err:
                raise ValueError(f"replay.tables: {err}; give a table with finite values "
                                 "(a NaN row ends a diverged curve)") from None
            for i, objective in enumerate(self.objectives or []):
                if objective.metric not in table.metrics:
                    raise ValueError(
                        f"objectives.{i}.metric: table {table.name!r} records no "
                        f"{objective.metric!r} (it records {', '.join(table.metrics)}); "
                        "docs/multi-objective.md says which tables vary size")
            if self.objectives and (self.metric, self.mode) != (table.metric, table.mode):
                raise ValueError(f"objectives.0: table {table.name!r} scores {table.metric} "
                                 f"({table.mode}); put {{metric: {table.metric}, mode: "
                                 f"{table.mode}}} first (a replay ranks by it)")
            if "metric" in self.model_fields_set and self.metric != table.metric:
                raise ValueError(f"metric: table {table.name!r} records {table.metric!r}; "
                                 "remove metric (a replay uses the table's)")
        tables = [cached_table(path) for path in self.replay.tables]
        if tables:  # an entry may lack what one table needs: refused where no table fits
            self._check_entries(*(lambda name, t=t: plan_space(name, t, self.replay.space)
                                  for t in tables))

    def _check_entries(self, *spaces_of: Callable[[str], SearchSpace]) -> None:
        """Each searcher's options fit a space it searches, `space_of(name)` (in a replay
        it differs by entry and table: the table's grid, PB2's continuous ranges); on
        several tables, at least one."""
        for name in self.searchers:
            errors = [self._entry_error(name, space_of(name)) for space_of in spaces_of]
            if all(errors):
                raise ValueError(errors[0])

    def _entry_error(self, name: str, space: SearchSpace) -> str | None:
        try:
            registry.check_options(name, self.searcher_options.get(name, {}), space)
        except registry.RegistryError as err:
            where = f"searcher_options.{name}" if name in self.searcher_options else \
                f"searchers.{name}"
            return f"{where}: {err}"
        if space.searched == () and registry.entry(name).needs_space:
            return f"space: nothing to search for {name!r}; give at least one range or choice"
        return None

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    @property
    def mode(self) -> Literal["max", "min"]:
        if self.objectives:
            return self.objectives[0].direction  # type: ignore[return-value]
        return METRICS[self.metric]  # type: ignore[return-value]

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name


def _format_loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "config"


def _model_for(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`, to suggest names for unknown keys."""
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel
        ) else None
    return model


def _first_error(err: ValidationError) -> str:
    """One line for the first validation problem: field, bad value, what is accepted."""
    first = err.errors(include_url=False)[0]
    loc, kind, msg = first["loc"], first["type"], first["msg"]
    where = _format_loc(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_for(loc)
        known = list(model.model_fields) if model else []
        hint = did_you_mean(key, known)
        accepted = f"; accepted keys: {', '.join(known)}" if known else ""
        return f"{where}: unknown key{hint}{accepted}"
    msg = msg.removeprefix("Value error, ")
    if msg.startswith(f"{where}.") or (not loc and re.match(r"[a-z_]+[.:]", msg)):
        return msg  # the message already names the exact field
    if kind not in ("value_error", "assertion_error"):
        value = first.get("input")
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{msg} (got {shown})"
    return f"{where}: {msg}"


def build_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a mapping; raise ConfigError with one line on the first problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_first_error(err)) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a typo'd override would win unseen)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # `<<: *defaults` merge keys, as the safe loader reads them
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {type(key).__name__} where a name belongs; keys are "
                    "plain names", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads 1e-5 as a number; PyYAML (YAML 1.1) as the text '1e-5', which a space's
# bounds then refuse: numbers with an exponent and no dot are floats here too.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; a missing file or a syntax error is a ConfigError."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--config: {str(file)!r} is a folder; give a YAML file")
    if file.exists() and not file.is_file():  # a device, a pipe: reading could never end
        raise ConfigError(f"--config: {str(file)!r} is not a regular file; give a YAML file")
    if not file.is_file():
        raise ConfigError(f"--config: file {str(file)!r} not found; give a YAML file")
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"--config: {file} is not UTF-8 text; save it as UTF-8 YAML"
                          ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or ""
        detail = f": {problem}" if problem.startswith("key ") else ""
        raise ConfigError(f"--config: {file} is not valid YAML{where}{detail}") from None
    except RecursionError:
        raise ConfigError(f"--config: {file} nests lists or mappings too deeply to be a "
                          "config; flatten it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {file} must hold a mapping of keys at the top level")
    if _values_beyond(data, MAX_CONFIG_VALUES):
        raise ConfigError(f"--config: {file} expands to more than {MAX_CONFIG_VALUES} values "
                          "(YAML aliases nested in aliases?); write the values out")
    return data


MAX_CONFIG_VALUES = 100_000
"""More values than any config needs: a YAML alias bomb expands past it in a few lines."""


def _values_beyond(data: Any, budget: int) -> bool:
    """Whether `data` holds more than `budget` values, aliases expanded (stops counting
    there: an alias bomb's full size is never walked)."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


DOTTED_KEY_SECTIONS = ("weights",)
"""Sections whose keys may hold dots (backbone specs such as resnet18@0.0625)."""


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict (for `--set a.b.c=value`). A key of `weights` is a
    backbone spec, whose width holds a dot: `weights.resnet18@0.5=w.pt` sets one key."""
    parts = dotted.split(".")
    if parts[0] in DOTTED_KEY_SECTIONS and len(parts) > 2:
        parts = [parts[0], ".".join(parts[1:])]
    if not all(parts):
        raise ConfigError(f"--set: {dotted!r} is not a dotted key like budget.trials")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    preset: str | None = None,
) -> ExperimentConfig:
    """Merge a preset, a YAML file and dotted overrides (in that order) and validate."""
    raw: dict[str, Any] = {}
    if preset is not None:
        from service.core.presets import get_preset

        raw = get_preset(preset)
    if path is not None:
        for key, value in read_yaml(path).items():
            raw[key] = value
    for dotted, value in (overrides or {}).items():
        set_path(raw, dotted, value)
    if "searchers" in (overrides or {}):
        _narrow_to_searchers(raw, set(overrides or {}))
    return build_config(raw)


def _narrow_to_searchers(raw: dict[str, Any], given: set[str]) -> None:
    """`--searchers` over a preset or file: the options and paired comparisons it brought
    for searchers no longer listed go with them (what the overrides set stays, and is
    checked as usual)."""
    keep = set(raw.get("searchers") or [])
    options = raw.get("searcher_options")
    if isinstance(options, dict) and not any(k.startswith("searcher_options") for k in given):
        raw["searcher_options"] = {k: v for k, v in options.items() if k in keep}
    replay = raw.get("replay")
    if isinstance(replay, dict) and isinstance(replay.get("paired"), list) \
            and not any(k.startswith("replay") for k in given - {"replay.tables"}):
        replay["paired"] = [p for p in replay["paired"] if isinstance(p, str)
                            and all(side.strip() in keep for side in p.split(" vs "))]


def parse_set(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """Parse `key.path=value` strings (given with `flag`); values are read as YAML scalars
    or lists."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag}: {item!r} needs the form key.path=value")
        key, text = item.split("=", 1)
        try:
            out[key.strip()] = yaml.load(text, Loader=UniqueKeyLoader) if text else None
        except (yaml.YAMLError, RecursionError):
            raise ConfigError(f"{flag} {key}: value {text!r} is not valid YAML") from None
    return out
