"""The types every method and backend shares: the budget, the three plan kinds a registry
entry returns, the `Controller` protocol for in-trial methods, the schedule a trial answers
and the per-epoch result row. Cheap to import (no Ray, no torch), so config validation,
entries and reports all use it."""

from __future__ import annotations

import difflib
import importlib
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DATASETS: tuple[str, ...] = ("digits", "synthetic", "cifar10", "fashion_mnist", "cifar100",
                             "imagefolder")
"""The datasets `service.training.data` loads, by config name (the one list config validates)."""

# One of each: "did you mean", numpy to plain values.


def did_you_mean(word: Any, options: Sequence[str] | Mapping[str, Any], cutoff: float = 0.5
                 ) -> str:
    """` (did you mean 'x'?)` for the closest of `options`, or an empty string."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


def plain(value: Any) -> Any:
    """Numpy scalars to Python values, recursively through dicts, lists and tuples (BOHB and
    skopt suggest numpy scalars; JSON and Tune's result files want plain ones)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    return value


def import_path(path: str) -> Any:
    """The object a `"package.module:name"` path names (registry factories, controllers)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def eq2_reward(val_acc: float, size: float, c_acc: float, *,
               terminated: bool = False) -> float:
    """Iranfar et al. eq. 2: -1 on early termination (or without a finite accuracy), else
    c_A A_val - c_S S_model with c_S = 1 - c_A; `size` is the model size in the caller's
    unit (MB over a reference size: our reading, which keeps both terms on one scale)."""
    if terminated or not math.isfinite(val_acc):
        return -1.0
    return c_acc * val_acc - (1.0 - c_acc) * size


class ConfigError(ValueError):
    """An invalid experiment configuration or command line; `str()` is the one-line message
    to print (exit status 2, before Ray starts)."""


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen, a number is
    never read from true/false or from text (pydantic takes `trials: true` as 1 and
    `seeds: ["1"]` as 1), and no number is infinite or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None or not _numeric(field.annotation):
            return value
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in values):
            raise ValueError(f"give a number, not {str(value).lower()}")
        text = next((v for v in values if isinstance(v, str)), None)
        if text is not None:
            raise ValueError(f"give a number, not the text {text!r}")
        return value


def _numeric(annotation: Any) -> bool:
    """Whether a field holds numbers: int, float, their Optional, or a list of them."""
    args = typing.get_args(annotation)
    if annotation in (int, float):
        return True
    return bool(args) and all(a in (int, float, type(None)) for a in args) and \
        any(a in (int, float) for a in args)


class Budget(Strict):
    """Equal budget per searcher: `trials` x `epochs`; multi-fidelity methods get the same
    total epochs (`total_epochs`, derived when not set)."""

    trials: int = Field(default=6, ge=1, le=100_000)
    epochs: int = Field(default=3, ge=1, le=100_000)
    total_epochs: int | None = Field(default=None, ge=1, le=100_000 * 100_000)

    @property
    def epoch_budget(self) -> int:
        return self.total_epochs or self.trials * self.epochs

    @property
    def fidelity_trials(self) -> int:
        """Trials for a multi-fidelity method: enough that early stopping can spend the whole
        epoch budget; the budget stopper ends the experiment when it is spent."""
        return max(self.trials, self.epoch_budget)


# Plan kinds: what one registry entry asks a backend to run.


@dataclass
class Plan:
    """Common part of every plan: trials, epochs per trial, an optional scheduler, and for
    multi-fidelity methods the total epochs (`epoch_budget`) at which the experiment ends."""

    name: str
    num_samples: int
    max_epochs: int
    scheduler: Any = None
    epoch_budget: int | None = None
    min_concurrency: int = 1
    param_space: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    patience: int = 0
    """Early stopping inside a trial: it ends once its metric has not improved for this many
    epochs (0: never; Pham 2024 checks after each checkpoint). See `plateaued`."""

    metric: Any = None
    mode: Any = None
    """What the searcher optimises (`service.backends.plans.build` sets them): the
    experiment's metric and mode, or with objectives a list of each (a native
    multi-objective searcher) or the scalarised `objective`, maximised."""

    replays_schedule: ClassVar[bool] = False
    """Whether hyperparameters change inside a trial, so the final test replays the chosen
    trial's schedule epoch by epoch instead of retraining one config."""

    @property
    def multi_fidelity(self) -> bool:
        return self.epoch_budget is not None

    def concurrency(self, cap: int) -> int:
        """Tune's trial cap for this plan: the user's cap, raised where the method needs more
        live (running or paused) trials to work at all."""
        return max(cap, self.min_concurrency)


@dataclass
class SearcherPlan(Plan):
    """One config per trial from a Tune `Searcher` (wrapped in the result guard)."""

    searcher: Any = None


@dataclass
class PopulationPlan(Plan):
    """A seeded population under a scheduler that mutates it (PBT, PB2): Tune's variant
    generator runs `initial_configs`; `param_space` holds the domains the scheduler mutates."""

    initial_configs: list[dict[str, Any]] = field(default_factory=list)
    replays_schedule: ClassVar[bool] = True


@dataclass
class ControllerPlan(Plan):
    """Trials whose hyperparameters a `Controller` sets inside the running trial, asked every
    `step_epochs` epochs. `controller` is the import path of its factory (called with the
    space, seed and `controller_options`), built by the host where it runs."""

    controller: str = ""
    controller_options: dict[str, Any] = field(default_factory=dict)
    step_epochs: int = 1
    controls: dict[str, Any] | None = None
    """The dimensions the controller sets, as a space mapping (`SearchSpace.from_dict`), when
    they are its own rather than the experiment's (Pham's optimizer set with one
    rate each): answers are checked against them, and the host samples the space's other
    searched dimensions once per trial. None: the controller sets the searched space."""
    replays_schedule: ClassVar[bool] = True


def trial_budget(max_epochs: int, config: Mapping[str, Any] | None) -> int:
    """A trial's epoch budget, in both backends: the plan's, or less where the trial's
    config sets `epochs` (Iranfar et al.'s short episodes), never below one."""
    wanted = (config or {}).get("epochs")
    return max_epochs if wanted is None else max(1, min(max_epochs, int(wanted)))


def plateaued(values: Sequence[float], patience: int, mode: str = "max") -> bool:
    """Whether a trial's metric (one value per epoch, NaN for none) has not improved on its
    best for `patience` epochs: early stopping (0 turns it off)."""
    if patience <= 0 or not values:
        return False
    sign = 1.0 if mode == "max" else -1.0
    best, since = -math.inf, 0
    for value in values:
        score = sign * float(value) if value == value else -math.inf
        if score > best:
            best, since = score, 0
        else:
            since += 1
    return since >= patience


# In-trial controllers.


@dataclass(frozen=True)
class Observation:
    """What a trial tells its controller at a step boundary (and when it ends)."""

    trial_id: str
    epoch: int
    """Epochs trained so far in this trial."""
    max_epochs: int
    """The trial's budget in epochs."""
    hp: dict[str, Any]
    """The hyperparameters in force (resolved, every name the trainer knows)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """The epoch rows (`EPOCH_FIELDS`) reported since the previous decision; empty at the
    first one. A diverged epoch's row has `diverged` true and NaN validation metrics."""


@runtime_checkable
class Controller(Protocol):
    """Changes hyperparameters inside running trials; one instance serves all trials of an
    experiment. The host calls `decide` at every step boundary and answers the trial at
    once; `learn` runs afterwards, off the trial's path. State must round-trip through
    `get_state`/`set_state` (the host saves it with Tune's experiment checkpoints).

    A controller may also offer `propose(trial_id, max_epochs) -> dict`: a new trial's
    starting values of searched dimensions a running trial cannot change (HYPERA's
    architecture agent); the host puts them in the trial's config."""

    def decide(self, obs: Observation) -> dict[str, Any]:
        """The changes for the next step: names of searched dimensions and their values."""

    def finish(self, obs: Observation) -> None:
        """The trial ended; `obs.rows` is its last step (empty when it failed to report)."""

    def learn(self) -> dict[str, float]:
        """Run the learner updates the closed steps are owed; returns the learner metrics."""

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        """Closed steps from `start` on (reward, actions, state): CSV and TensorBoard rows."""

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


# Schedules: the hyperparameters in force per epoch.


@dataclass
class Schedule:
    """The hyperparameters in force for each epoch a trial trained, run-length encoded as
    `[[first_epoch, hp], ...]` (1-based). A PBT clone inherits its donor's schedule with the
    weights; the final test replays it epoch by epoch."""

    runs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    epochs: int = 0

    def append(self, hp: Mapping[str, Any]) -> None:
        """Record the hyperparameters of the next epoch."""
        self.epochs += 1
        hp = plain(dict(hp))
        if not self.runs or self.runs[-1][1] != hp:
            self.runs.append((self.epochs, hp))

    def at(self, epoch: int) -> dict[str, Any]:
        """The hyperparameters of epoch `epoch` (1-based)."""
        if not 1 <= epoch <= self.epochs:
            raise IndexError(f"epoch {epoch} outside 1..{self.epochs}")
        return dict(next(hp for first, hp in reversed(self.runs) if first <= epoch))

    def upto(self, epochs: int) -> Schedule:
        """The first `epochs` epochs."""
        return Schedule([(f, hp) for f, hp in self.runs if f <= epochs], min(epochs, self.epochs))

    def to_json(self) -> str:
        return json.dumps({"epochs": self.epochs, "runs": [[f, hp] for f, hp in self.runs]},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> Schedule:
        data = json.loads(text) if isinstance(text, str) else text
        return cls([(int(f), dict(hp)) for f, hp in data["runs"]], int(data["epochs"]))

    def __len__(self) -> int:
        return self.epochs


# The per-epoch result row, the same for every backend.

HP_PREFIX = "hp_"
"""Columns `hp_<name>`: the hyperparameters in force that epoch (bools as 0/1)."""

EPOCH_FIELDS: tuple[str, ...] = (
    "val_acc", "val_loss", "train_acc", "train_loss", "grad_norm", "grad_norm_std",
    "epoch_time_s", "elapsed_s", "images_per_s", "model_size_mb", "num_parameters", "epoch",
    "diverged", "device", "gpu_ids", "node_id", "unix_time", "controller_wait_s", "schedule",
    "train_ms_per_batch", "terminated", "restarts", "loss_violations", "loss_met_epoch",
    "init_seed", "setup_s", "eval_s", "report_s", "pid",
)
"""What a trial reports per epoch, besides the `hp_*` columns. `elapsed_s` is the trial's
own wall time from its start to the end of this epoch (training, evaluation, checkpoint,
controller waits; carried over a resume), which reports plot against; `unix_time` is when
the epoch ended (Tune's `timestamp` has whole seconds only); `schedule` is the trial's
`Schedule` through this epoch as JSON; `controller_wait_s` is how long the trial waited for
its controller's answer before this epoch (0 without one). `terminated` ('' or why) and the
rest after it are Iranfar et al.'s early termination
(`service.backends.tune.trainable._Termination`); `reward` joins them when the experiment
reports eq. 2."""

ROW_OPTIONAL: tuple[str, ...] = ("reward", "test_acc", "test_loss", "objective")
"""Columns a row carries only when the experiment asks: `reward` (Iranfar et al. eq. 2,
the config's `reward`), the test scores of a trial's last epoch (`record`) and `objective`,
the scalarised objectives (`service.core.objectives.with_objective`)."""


def hp_columns(hp: Mapping[str, Any]) -> dict[str, Any]:
    """A row's `hp_<name>` columns: the hyperparameters in force that epoch, bools as 0/1
    (scalars TensorBoard plots against epochs), the same for every backend."""
    return {f"{HP_PREFIX}{name}": int(value) if isinstance(value, bool) else value
            for name, value in hp.items()}


def undeclared_columns(row: Mapping[str, Any]) -> list[str]:
    """The keys of a backend's epoch row that the schema above does not declare: a backend
    that reports what the other does not know, or misspells a column, is caught by the
    contract test both backends run (`tests/backends/test_row_schema.py`)."""
    return [k for k in row if k not in EPOCH_FIELDS and k not in ROW_OPTIONAL
            and not k.startswith(HP_PREFIX)]
