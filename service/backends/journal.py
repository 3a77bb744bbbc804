"""Every cell's trials in an Optuna journal (`<experiment>/optuna.journal`), so that
optuna-dashboard (`python -m service dashboard <experiment>`) shows a run while it goes on.

One study per cell (searcher x backbone x seed; a replay's backbone slot is its table),
named by the cell's folder, with searcher, backbone, seed (and table) as study user
attributes and the config's direction. A trial's parameters carry distributions from the
project's search space; its metric per epoch is an intermediate value (step = epoch). While
it trains it is RUNNING; an errored, diverged or terminated trial is FAIL; one that ended
before its epoch budget (a scheduler's stop, early stopping, the epoch budget) is PRUNED;
the rest COMPLETE. Its value is its best finite epoch, the one the service would choose it
at (`chosen_epoch`), so a study's best trial is the cell's chosen trial. An in-trial method's
trial (PBT, PB2, a controller) has its `schedule` as a user attribute and the
hyperparameters in force at the chosen epoch as its parameters.

`frozen_trial` is the one mapping from a trial's rows to an Optuna trial; both backends call
it (the Tune backend through `JournalWriter.start` / `end` on the driver, the replay backend
through `JournalWriter.add` once a cell's results are known).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.api import Schedule, plain
from service.core.layout import JOURNAL_FILE, Cell
from service.core.space import LOG10_PREFIX, SearchSpace

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import JournalStorage
    from optuna.trial import FrozenTrial

__all__ = ["JOURNAL_FILE", "JournalWriter", "TrialLog", "distributions", "frozen_trial",
           "journal_path"]


def journal_path(folder: str | Path) -> Path:
    """The journal of an experiment folder."""
    return Path(folder) / JOURNAL_FILE


@dataclass
class TrialLog:
    """What the journal needs of one trial, built from its reported rows: the config it
    started with, its metric per epoch, its last schedule, how it ended."""

    key: str
    """Tune's trial id (a trial user attribute: the journal's link back to the run)."""
    config: dict[str, Any]
    planned_epochs: int
    values: dict[int, float] = field(default_factory=dict)
    schedule: str | None = None
    status: str = "RUNNING"
    """RUNNING while it trains; TERMINATED once it ended; ERROR when it raised."""
    failed: str | None = None
    """Why a trial that returned normally still failed (diverged, terminated)."""
    started_unix: float | None = None
    ended_unix: float | None = None

    def add_row(self, row: Mapping[str, Any], metric: str) -> tuple[int, float]:
        """Take one reported row (the service's result schema); its (epoch, metric value)."""
        epoch = int(row.get("epoch") or row.get("training_iteration") or len(self.values) + 1)
        value = row.get(metric)
        value = float(value) if isinstance(value, (int, float)) else math.nan
        self.values[epoch] = value
        if isinstance(row.get("schedule"), str):
            self.schedule = row["schedule"]
        if row.get("diverged"):
            self.failed = f"diverged at epoch {epoch}"
        elif row.get("terminated"):
            self.failed = f"terminated at epoch {epoch}: {row['terminated']}"
        return epoch, value


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each searched dimension (constants are not parameters)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for dim in space.searched:
        if dim.kind == "choice":
            out[dim.name] = CategoricalDistribution(list(dim.choices))
        elif dim.kind == "int":
            out[dim.name] = IntDistribution(int(dim.low), int(dim.high))
        else:
            out[dim.name] = FloatDistribution(float(dim.low), float(dim.high),
                                              log=dim.kind == "loguniform")
    return out


def _value_of(hp: Mapping[str, Any], name: str) -> Any:
    """`name`'s value in a trial config or schedule entry (PB2's `log10_<name>` too)."""
    if name in hp:
        return plain(hp[name])
    if LOG10_PREFIX + name in hp:
        return 10.0 ** float(hp[LOG10_PREFIX + name])
    return None


def _chosen(values: Mapping[int, float], mode: str) -> tuple[int, float] | None:
    """The best finite epoch and its value (the first of equals)."""
    sign = 1.0 if mode == "max" else -1.0
    best: tuple[int, float] | None = None
    for epoch in sorted(values):
        value = values[epoch]
        if math.isfinite(value) and (best is None or sign * value > sign * best[1]):
            best = (epoch, value)
    return best


def describe_schedule(schedule: Schedule, names: tuple[str, ...]) -> str:
    """A schedule as one readable line: the first epoch's searched values in full, then only
    what changed and from which epoch (`1: lr=0.001 optimizer=adam | 4: lr=0.0005`)."""
    parts, last = [], {}
    for first, hp in schedule.runs:
        now = {n: plain(hp[n]) for n in names if n in hp}
        changed = {k: v for k, v in now.items() if last.get(k, object()) != v}
        if changed or not parts:
            parts.append(f"{first}: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                 else f"{k}={v}" for k, v in changed.items()))
        last = now
    return " | ".join(parts)


def frozen_trial(log: TrialLog, space: SearchSpace, mode: str, *, in_trial: bool = False,
                 number: int = 0, offset_s: float = 0.0) -> FrozenTrial:
    """The Optuna trial of `log`: state, value, parameters with their distributions,
    intermediate values and user attributes (see the module's docstring). `in_trial`: the
    cell's method changes hyperparameters inside trials (parameters from the schedule at
    the chosen epoch); `offset_s` moves simulated times (a replay's) onto the wall clock."""
    from optuna.trial import FrozenTrial, TrialState

    dists = distributions(space)
    chosen = _chosen(log.values, mode)
    last_epoch = max(log.values, default=0)
    attrs: dict[str, Any] = {"tune_trial_id": log.key, "planned_epochs": log.planned_epochs,
                             "epochs": last_epoch}
    hp: Mapping[str, Any] = log.config
    schedule = Schedule.from_json(log.schedule) if log.schedule else None
    if in_trial and schedule is not None and schedule.epochs:
        attrs["schedule"] = describe_schedule(schedule, tuple(dists))
        at = chosen[0] if chosen is not None else schedule.epochs
        hp = schedule.at(min(max(at, 1), schedule.epochs))
    params: dict[str, Any] = {}
    used: dict[str, BaseDistribution] = {}
    for name, dist in dists.items():
        given = _value_of(hp, name)
        if given is None:
            continue
        if space[name].contains(given) and dist._contains(dist.to_internal_repr(given)):
            params[name], used[name] = given, dist
        else:  # outside the space (a PBT perturbation past a bound): kept, not a parameter
            attrs[f"off_space_{name}"] = given
    value: float | None = None
    if log.status == "RUNNING":
        state = TrialState.RUNNING
    elif log.status == "ERROR" or log.failed or chosen is None:
        state = TrialState.FAIL
        if log.failed or chosen is None:
            attrs["failed"] = log.failed or "no finite result"
    elif last_epoch < log.planned_epochs:
        state = TrialState.PRUNED
        value = chosen[1]
    else:
        state = TrialState.COMPLETE
        value = chosen[1]
    if chosen is not None:
        attrs["chosen_epoch"] = chosen[0]
    if last_epoch and math.isfinite(log.values[last_epoch]):
        attrs["last_value"] = log.values[last_epoch]
    now = dt.datetime.now()
    start = _when(log.started_unix, offset_s) or now
    end = (_when(log.ended_unix, offset_s) or now) if state.is_finished() else None
    return FrozenTrial(
        number=number, state=state, value=value, datetime_start=start,
        datetime_complete=max(end, start) if end else None, params=params,
        distributions=used, user_attrs=attrs, system_attrs={},
        intermediate_values={e: v for e, v in sorted(log.values.items())
                             if math.isfinite(v)},
        trial_id=0)


def _when(unix: float | None, offset_s: float) -> dt.datetime | None:
    return None if unix is None else dt.datetime.fromtimestamp(unix + offset_s)


class JournalWriter:
    """One process's handle on an experiment's journal (a file lock serialises the
    processes that share it: a run's Tune drivers, the replay's driver). Studies are found
    by their cell's name, trials by their Tune id, so a resumed driver carries on the
    trials an earlier one started."""

    def __init__(self, folder: str | Path, space: SearchSpace | None = None,
                 metric: str = "val_acc", mode: str = "max") -> None:
        self.path = journal_path(folder)
        self.space = space or SearchSpace()
        self.metric, self.mode = metric, mode
        self._storage: JournalStorage | None = None
        self._studies: dict[str, int] = {}
        self._trials: dict[str, int] = {}  # Tune id -> Optuna trial id

    @property
    def storage(self) -> JournalStorage:
        if self._storage is None:
            import logging

            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            # its INFO line per new study would reach the console of a replay's driver
            logging.getLogger("optuna.storages.journal._storage").setLevel(logging.WARNING)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._storage = JournalStorage(JournalFileBackend(str(self.path)))
        return self._storage

    def study(self, cell: Cell, mode: str | None = None, metric: str | None = None,
              **attrs: Any) -> int:
        """The study of `cell`, created (with its user attributes) when it is new; `mode`
        and `metric` where they are the cell's own (a replay's table)."""
        mode, metric = mode or self.mode, metric or self.metric
        name = cell.name
        if name in self._studies:
            return self._studies[name]
        from optuna.study import StudyDirection

        storage = self.storage
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            direction = StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
            study_id = storage.create_new_study([direction], name)
            for key, value in {"searcher": cell.searcher, "backbone": cell.backbone,
                               "seed": cell.seed, "metric": metric, **attrs}.items():
                storage.set_study_user_attr(study_id, key, plain(value))
            # the objective's name in the dashboard's plots (optuna's Study.set_metric_names)
            storage.set_study_system_attr(study_id, "study:metric_names", [metric])
        self._studies[name] = study_id
        return study_id

    def _find(self, study_id: int, key: str) -> int | None:
        """The Optuna trial of Tune trial `key` (after a resume: read from the journal)."""
        if key in self._trials:
            return self._trials[key]
        for trial in self.storage.get_all_trials(study_id, deepcopy=False):
            if trial.user_attrs.get("tune_trial_id") == key:
                self._trials[key] = trial._trial_id
                return trial._trial_id
        return None

    def add(self, cell: Cell, log: TrialLog, *, in_trial: bool = False,
            offset_s: float = 0.0, space: SearchSpace | None = None, mode: str | None = None,
            metric: str | None = None, **attrs: Any) -> int:
        """A trial whose rows are all known, written in one journal entry; its Optuna id.
        `space`, `mode`, `metric`: the cell's own where they are not the writer's."""
        study_id = self.study(cell, mode=mode, metric=metric, **attrs)
        trial = frozen_trial(log, space or self.space, mode or self.mode, in_trial=in_trial,
                             offset_s=offset_s)
        trial_id = self.storage.create_new_trial(study_id, template_trial=trial)
        self._trials[log.key] = trial_id
        return trial_id

    def start(self, cell: Cell, log: TrialLog, *, in_trial: bool = False) -> int:
        """A trial that began (or resumed): RUNNING with its parameters; its Optuna id."""
        study_id = self.study(cell)
        found = self._find(study_id, log.key)
        if found is None:
            return self.add(cell, log, in_trial=in_trial)
        for step, value in self.storage.get_trial(found).intermediate_values.items():
            log.values.setdefault(step, value)  # what a driver before a resume wrote
        return found

    def result(self, key: str, epoch: int, value: float) -> None:
        """One epoch's metric as an intermediate value (non-finite values are left out)."""
        trial_id = self._trials.get(key)
        if trial_id is not None and math.isfinite(value):
            self.storage.set_trial_intermediate_value(trial_id, epoch, value)

    def end(self, cell: Cell, log: TrialLog, *, in_trial: bool = False) -> None:
        """A trial that ended: what changed since it started (parameters in force, user
        attributes), then its state and value."""
        study_id = self.study(cell)
        trial_id = self._find(study_id, log.key)
        if trial_id is None:  # ended before it started (a pending trial stopped)
            if not log.values:
                return
            trial_id = self.start(cell, TrialLog(log.key, log.config, log.planned_epochs),
                                  in_trial=in_trial)
        storage = self.storage
        stored = storage.get_trial(trial_id)
        if stored.state.is_finished():
            return
        final = frozen_trial(log, self.space, self.mode, in_trial=in_trial)
        for name, value in final.params.items():
            if stored.params.get(name, object()) != value:
                storage.set_trial_param(trial_id, name,
                                        final.distributions[name].to_internal_repr(value),
                                        final.distributions[name])
        for step, value in final.intermediate_values.items():
            if stored.intermediate_values.get(step) != value:
                storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in final.user_attrs.items():
            if stored.user_attrs.get(key, object()) != value:
                storage.set_trial_user_attr(trial_id, key, value)
        storage.set_trial_state_values(trial_id, final.state,
                                       None if final.value is None else [final.value])
