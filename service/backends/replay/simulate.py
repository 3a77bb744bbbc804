"""The replay backend: the registry's plans, unchanged, against a recorded table, on a
simulated clock, in this process (Syne Tune's simulator design, for Ray Tune's objects).

The very `Searcher` and `TrialScheduler` objects a real run uses are driven here the way
Ray Tune's `TuneController` drives them: Tune's own `SearchGenerator` (behind the same
`ConcurrencyLimiter`) makes the `Trial` objects, the scheduler chooses which trial runs and
answers CONTINUE / PAUSE / STOP after every result, and `SimController` offers the part of
`TuneController` schedulers call (pause, stop, save, the trial list). A trial's epochs are
read from the table instead of trained; each finishes at `now + its recorded seconds`.

- A paused (HyperBand, BOHB) trial resumes at the epoch it reached, on the same curve.
- A PBT / PB2 clone, and a trial whose controller changes its hyperparameters, continue on
  the new configuration's curve where the continuation model puts them
  (`service.backends.replay.continuation`: by default from the epoch where that curve first reaches
  the trial's current value). No weights carry over: in-trial rows are verified by
  retraining where the table allows (`service.backends.replay.verify`); reports say which.
- At most `slots` trials train at once (the experiment's slots, what its CPUs and GPUs
  allow), whatever live-trial cap a plan needs for its paused trials; no cell trains more
  epochs than its budget.
- The searcher's and scheduler's own compute advances the simulated clock (Syne Tune's time
  keeper), unless `searcher_time` is off.
- By default (`space="grid"`) every plan searches the table's recorded values, each
  searched dimension a choice, numbers in order (`ReplayTable.grid_space`), so every
  searcher sees the same space; `space="continuous"` gives the table's ranges instead. A
  configuration off the table's grid (continuous mode, PB2 always) is snapped to the
  nearest recorded one (log scale on log ranges); every snap is counted.
- The recorded seed a trial replays is drawn from the experiment seed and the trial's index,
  and Tune's trial ids are numbered, so a replay is exactly reproducible.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.backends import plans
from service.backends.replay.continuation import DEFAULT_MODEL, MODELS, position_after_switch, read
from service.backends.tune import ray_compat
from service.core.api import (
    Budget,
    ControllerPlan,
    Observation,
    PopulationPlan,
    Schedule,
    SearcherPlan,
    hp_columns,
    plain,
    plateaued,
    trial_budget,
)
from service.core.objectives import Objectives, with_objective
from service.core.space import HPARAMS, LOG10_PREFIX, SearchSpace, resolve_config
from service.core.table import (
    ROW_METRICS,
    TIME,
    ReplayError,
    ReplayTable,
    plan_space,
)


@dataclass
class SimCheckpoint:
    """What a replayed trial's checkpoint holds: where it is on which curve."""

    epoch: int
    schedule: str
    elapsed: float
    hp: dict[str, Any]
    history: tuple[float, ...] = ()
    config: int = -1
    position: int = 0


@dataclass
class _TrialState:
    index: int
    seed: int
    hp: dict[str, Any]
    epoch: int = 0
    elapsed: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)
    rows: list[dict[str, Any]] = field(default_factory=list)
    token: int = 0
    pending: tuple[int, float] | None = None
    history: list[float] = field(default_factory=list)
    config: int = -1
    """The table configuration in force (-1 before the first epoch)."""
    position: int = 0
    """Epochs of that configuration's curve the trial counts as trained (the continuation
    model moves it on a switch)."""
    budget: int = 0
    """The trial's epochs: the plan's, or fewer where its config sets `epochs`."""


MAX_PENDING_VARIANTS = 200
"""Tune's pending trials for its variant generator (`_get_max_pending_trials`' minimum)."""


class SimController:
    """The part of Ray Tune's `TuneController` that schedulers and searchers call."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    @property
    def search_alg(self) -> Any:
        return self._sim.search_alg

    def get_trials(self) -> list[Any]:
        return list(self._sim.trials)

    def get_live_trials(self) -> list[Any]:
        from ray.tune.experiment import Trial

        return [t for t in self._sim.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]

    def stop_trial(self, trial: Any) -> None:
        self._sim.stop(trial)

    def pause_trial(self, trial: Any, should_checkpoint: bool = True) -> None:
        self._sim.pause(trial)

    def _schedule_trial_save(self, trial: Any, result: dict | None = None) -> Any:
        saved = ray_compat.resolved_save(self._sim.checkpoint(trial),
                                         result or trial.last_result)
        trial.temporary_state.saving_to = None
        return saved


def _noop_trainable(config: dict[str, Any]) -> None:
    """The trainable name Tune's Trial objects carry in a replay; never run."""


class Simulation:
    """One cell: a plan against a table, to the plan's end, an epoch budget or
    `time_budget_s` of simulated time."""

    def __init__(self, plan: Any, table: ReplayTable, *, seed: int, slots: int,
                 time_budget_s: float | None = None, epoch_budget: int | None = None,
                 continuation: str = DEFAULT_MODEL, searcher_time: bool = True,
                 space: SearchSpace | None = None, space_mode: str = "continuous",
                 objectives: Objectives | None = None) -> None:
        self.plan, self.table, self.seed = plan, table, seed
        self.objectives = objectives
        """The experiment's objectives: each row gets its scalarised `objective`."""
        self.space = table.space if space is None else space
        """The space the plan was built on (a controller is hosted over it)."""
        self.space_mode = space_mode
        """The replay's space setting ("grid" or "continuous"), for the cell's summary."""
        if continuation not in MODELS:
            raise ReplayError(f"replay.continuation: unknown model {continuation!r}; use one "
                              f"of {', '.join(MODELS)}")
        self.continuation = continuation
        self.searcher_time = searcher_time
        self.searcher_s = 0.0
        """Seconds the searcher, the scheduler and any controller computed (on the clock)."""
        self.epoch_budget = epoch_budget
        self.epochs_done = 0
        if plan.max_epochs > table.epochs:
            hint = ""
            if isinstance(plan, PopulationPlan):
                total = plan.num_samples * plan.max_epochs
                hint = (f"; give searcher_options.{plan.name}.population >= "
                        f"{math.ceil(total / table.epochs)} for the same budget")
            raise ReplayError(f"{plan.name} trains {plan.max_epochs} epochs per trial, table "
                              f"{table.name!r} records {table.epochs}{hint}")
        self.metric, self.mode = table.metric, table.mode
        # what the searcher, scheduler and controller optimise: the table's metric, or
        # with objectives their lists or the scalarised `objective` (plans.build)
        self.target = (plan.metric or self.metric, plan.mode or self.mode)
        self._check_controls(plan, table)
        self.slots = max(1, slots)
        self.time_budget_s = time_budget_s
        self.clock = 0.0
        self.trials: list[Any] = []
        self._by_id: dict[str, Any] = {}
        self.state: dict[str, _TrialState] = {}
        self.rows: list[dict[str, Any]] = []
        self.snapped = 0
        self.lookups = 0
        self._events: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._search_done = False
        self.ctrl = SimController(self)
        self.client: Any = None
        self.host: Any = None
        self.search_alg = self._search_alg()
        self.scheduler = self._scheduler()
        self.stopper = None
        if plan.multi_fidelity:
            from service.backends.tune.experiment import EpochBudgetStopper

            self.stopper = EpochBudgetStopper(plan.epoch_budget)

    @staticmethod
    def _check_controls(plan: Any, table: ReplayTable) -> None:
        """A controller with its own dimensions (Pham's optimizer set) must choose
        among values the table recorded: refuse before anything runs, naming the option."""
        if not isinstance(plan, ControllerPlan) or not plan.controls:
            return
        from service.core.space import SearchSpace

        for dim in SearchSpace.from_dict(plan.controls).dims:
            if dim.name not in table.names:
                raise ReplayError(f"{plan.name} sets {dim.name!r}, not a column of table "
                                  f"{table.name!r} ({', '.join(table.names)})")
            recorded = table.grid[dim.name]
            if dim.kind == "choice" and isinstance(dim.choices[0], str):
                missing = [c for c in dim.choices if c not in recorded]
                if missing:
                    raise ReplayError(
                        f"{plan.name} chooses {dim.name} {', '.join(map(str, missing))}, which "
                        f"table {table.name!r} never recorded ({', '.join(map(str, recorded))});"
                        f" give searcher_options.{plan.name}.optimizers from those")

    # Setup, as `tune.run` does it.

    def _search_alg(self) -> Any:
        from ray.tune.experiment import Experiment
        from ray.tune.search import ConcurrencyLimiter, SearchGenerator
        from ray.tune.search.basic_variant import BasicVariantGenerator

        plan = self.plan
        if isinstance(plan, SearcherPlan):
            searcher = plan.searcher
        elif isinstance(plan, PopulationPlan):
            searcher = BasicVariantGenerator(points_to_evaluate=plan.initial_configs,
                                             random_state=self.seed)
        elif isinstance(plan, ControllerPlan):
            from service.backends.tune.searching import ControllerHost

            searcher = self.host = ControllerHost(plan, self.space, metric=self.target[0],
                                                  mode=self.target[1], in_process=True)
        else:
            raise TypeError(f"unknown plan kind {type(plan).__name__}")
        from ray.tune.search import Searcher

        # Tune keeps this many trials pending (`TuneController._max_pending_trials`): a
        # searcher's live cap, or 200 for the variant generator. A HyperBand bracket holds
        # its pending trials, so its first rung waits for all of them even on one slot.
        self.max_pending = MAX_PENDING_VARIANTS
        if isinstance(searcher, Searcher):
            self.max_pending = plan.concurrency(self.slots)
            searcher = SearchGenerator(ConcurrencyLimiter(
                searcher, max_concurrent=self.max_pending))
        self._storage = tempfile.TemporaryDirectory(prefix="replay-")
        experiment = Experiment(f"replay_{plan.name}".replace(":", "_"), _noop_trainable,
                                config=dict(plan.param_space), num_samples=plan.num_samples,
                                storage_path=self._storage.name)
        searcher.set_search_properties(*self.target, dict(plan.param_space),
                                       **experiment.public_spec)
        searcher.add_configurations([experiment])
        return searcher

    def _scheduler(self) -> Any:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = self.plan.scheduler or FIFOScheduler()
        scheduler.set_search_properties(*self.target)
        if getattr(scheduler, "_log_config", False):
            scheduler._log_config = False  # PBT's policy files need a Ray session folder
        return scheduler

    # The table side.

    def _config_hp(self, config: dict[str, Any]) -> dict[str, Any]:
        """A trial config's values of the table's names (`log10_x` read as x; names the
        config leaves out get the trainer's default, or the table's middle value)."""
        names = self.table.names
        hp: dict[str, Any] = {}
        for key, value in plain(dict(config)).items():
            if key.startswith(LOG10_PREFIX) and key[len(LOG10_PREFIX):] in names:
                key, value = key[len(LOG10_PREFIX):], 10.0 ** float(value)
            if key not in names:
                if key in self.table.space.names or key in ("run", "epochs"):
                    continue
                raise ReplayError(f"trial config names {key!r}, not a column of table "
                                  f"{self.table.name!r} ({', '.join(names)})")
            hp[key] = value
        for name in names:
            if name not in hp:
                values = self.table.grid[name]
                default = HPARAMS[name].default if name in HPARAMS else None
                hp[name] = default if default in values else values[len(values) // 2]
        return hp

    def _lookup(self, hp: dict[str, Any]) -> int:
        try:
            index, snapped = self.table.snap(hp)
        except (KeyError, ValueError) as err:
            raise ReplayError(f"cannot replay {hp} on table {self.table.name!r}: {err}"
                              ) from None
        self.lookups += 1
        self.snapped += snapped
        return index

    def hp_in_force(self, st: _TrialState) -> dict[str, Any]:
        """The hyperparameters a controller observes (every trainer name when the table's
        names are the trainer's)."""
        if all(n in HPARAMS for n in self.table.names):
            return resolve_config(st.hp)
        return dict(st.hp)

    # Tune's side.

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        """The driver's own work (searcher, scheduler, controller): its seconds move the
        clock, so a slow searcher starts its next epoch later."""
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.searcher_s += spent
            if self.searcher_time:
                self.clock += spent

    def run(self) -> Simulation:
        with ray_compat.numbered_trial_ids(f"{self.seed}_"):
            self._fill()
            while self._events:
                if self.stopper is not None and self.stopper.stop_all():
                    break
                if self.epoch_budget is not None and self.epochs_done >= self.epoch_budget:
                    break
                at, _, trial_id, token = heapq.heappop(self._events)
                st = self.state[trial_id]
                if token != st.token:
                    continue  # the trial was paused or stopped before this epoch ended
                if self.time_budget_s is not None and at > self.time_budget_s:
                    break
                self.clock = max(self.clock, at)
                self._epoch_done(self._by_id[trial_id])
                self._fill()
        self._storage.cleanup()
        return self

    def _running(self) -> int:
        return sum(t.status == "RUNNING" for t in self.trials)

    def _fill(self) -> None:
        """Ask the searcher for trials until `max_pending` wait (as Tune's controller does
        every step, free slot or not) and start what the scheduler chooses while there are
        free slots."""
        self._add_trials()
        while self._running() < self.slots:
            with self._compute():
                chosen = self.scheduler.choose_trial_to_run(self.ctrl)
            if chosen is None:
                return
            self._start(chosen)
            self._add_trials()

    def _add_trials(self) -> None:
        while not self._search_done and \
                sum(t.status == "PENDING" for t in self.trials) < self.max_pending:
            with self._compute():
                trial = self.search_alg.next_trial()
            if trial is None:
                self._search_done = self.search_alg.is_finished()
                return
            self.trials.append(trial)
            self._by_id[trial.trial_id] = trial
            with self._compute():
                self.scheduler.on_trial_add(self.ctrl, trial)

    def _start(self, trial: Any) -> None:
        st = self.state.get(trial.trial_id)
        if st is None:
            index = len(self.state)
            seed = int(np.random.default_rng([self.seed, index]).integers(
                len(self.table.seeds)))
            st = self.state[trial.trial_id] = _TrialState(index, seed, {})
        checkpoint = trial.checkpoint
        if isinstance(checkpoint, SimCheckpoint):  # resume, or continue a donor's curve
            st.epoch, st.elapsed = checkpoint.epoch, checkpoint.elapsed
            st.schedule = Schedule.from_json(checkpoint.schedule)
            st.hp, st.history = dict(checkpoint.hp), list(checkpoint.history)
            st.config, st.position = checkpoint.config, checkpoint.position
        else:
            st.epoch, st.elapsed, st.schedule, st.history = 0, 0.0, Schedule(), []
            st.config, st.position = -1, 0
        config_hp = self._config_hp(trial.config)
        st.budget = trial_budget(self.plan.max_epochs, trial.config)
        if not isinstance(self.plan, ControllerPlan) or not st.hp:
            st.hp = config_hp  # a PBT clone's new config; a fresh trial's config
        trial.set_status("RUNNING")
        if self.host is not None and self.client is None:
            from service.backends.tune.searching import ControllerClient

            self.client = ControllerClient(self.host.name)
        self._next_epoch(trial, st)

    def _next_epoch(self, trial: Any, st: _TrialState) -> None:
        if self.client is not None and st.epoch % max(1, self.plan.step_epochs) == 0:
            obs = Observation(trial.trial_id, st.epoch, self.plan.max_epochs,
                              self.hp_in_force(st), st.rows)
            with self._compute():
                changes, _ = self.client.decide(obs)
            st.rows = []
            st.hp.update(changes)
        config = self._lookup(st.hp)
        length = int(self.table.lengths[config, st.seed])
        if st.config >= 0 and config != st.config:  # a switch inside the trial
            st.position = position_after_switch(
                self.continuation, self.table.metrics[self.metric][config, st.seed], length,
                st.epoch, st.history[-1] if st.history else math.nan, self.table.sign)
        st.config = config
        times = self.table.metrics[TIME][config, st.seed]
        seconds = float(times[st.position]) if st.position < length else float(
            np.nanmean(times[:length]))
        st.pending = (config, seconds)
        st.token += 1
        heapq.heappush(self._events, (self.clock + seconds, next(self._seq), trial.trial_id,
                                      st.token))

    def _row(self, trial: Any, st: _TrialState, config: int, seconds: float) -> dict[str, Any]:
        """The epoch just trained: position `st.position` of the configuration's curve."""
        epoch = st.epoch
        arrays = self.table.metrics
        length = int(self.table.lengths[config, st.seed])
        row: dict[str, Any] = {}
        for name in dict.fromkeys((self.metric, *ROW_METRICS)):
            if name in arrays:
                row[name] = read(arrays[name][config, st.seed], length, self.table.epochs,
                                 st.position)
        value = row[self.metric]
        diverged = not math.isfinite(value)
        row.update({
            "epoch_time_s": seconds, "elapsed_s": st.elapsed, "epoch": epoch,
            "diverged": diverged, "device": "replay", "gpu_ids": "", "node_id": "replay",
            "unix_time": self.clock, "controller_wait_s": 0.0,
            "schedule": st.schedule.to_json(),
        })
        row.update(hp_columns(st.hp))
        return with_objective(row, self.objectives, self.seed, trial.trial_id)

    def checkpoint(self, trial: Any) -> SimCheckpoint:
        st = self.state[trial.trial_id]
        return SimCheckpoint(st.epoch, st.schedule.to_json(), st.elapsed, dict(st.hp),
                             tuple(st.history), st.config, st.position)

    def _epoch_done(self, trial: Any) -> None:
        from ray.tune.schedulers import TrialScheduler

        st = self.state[trial.trial_id]
        config, seconds = st.pending  # type: ignore[misc]
        st.pending = None
        st.epoch += 1
        st.elapsed += seconds
        self.epochs_done += 1
        st.schedule.append(st.hp)
        row = self._row(trial, st, config, seconds)
        st.position += 1
        st.rows.append(row)
        st.history.append(row[self.metric])
        result = {**row, "training_iteration": st.epoch, "time_this_iter_s": seconds,
                  "time_total_s": st.elapsed, "timestamp": int(self.clock), "done": False,
                  "trial_id": trial.trial_id}
        self.rows.append({"trial_id": trial.trial_id, "trial_index": st.index,
                          "recorded_seed": self.table.seeds[st.seed], "config": config,
                          **result})
        if not row["diverged"]:
            ray_compat.set_latest_checkpoint(trial, self.checkpoint(trial), result)
        if (self.stopper is not None and self.stopper(trial.trial_id, result)) or \
                trial.should_stop(result):
            decision = TrialScheduler.STOP
        else:
            with self._compute():
                decision = self.scheduler.on_trial_result(self.ctrl, trial, result)
        if decision != TrialScheduler.STOP:
            with self._compute():
                self.search_alg.on_trial_result(trial.trial_id, result)
        trial.update_last_result(result)
        last = row["diverged"] or st.epoch >= st.budget or plateaued(
            st.history, self.plan.patience, self.mode)  # the trainable's early stopping too
        if decision == TrialScheduler.CONTINUE and trial.status == "RUNNING":
            if last:  # the trainable returns: Tune's done result stops the trial
                if self.client is not None:
                    with self._compute():
                        self.client.finish(Observation(trial.trial_id, st.epoch,
                                                       self.plan.max_epochs,
                                                       self.hp_in_force(st), st.rows))
                self.stop(trial)
            else:
                self._next_epoch(trial, st)
        elif decision == TrialScheduler.PAUSE:
            self.pause(trial)
        elif decision == TrialScheduler.STOP:
            self.stop(trial)

    def pause(self, trial: Any) -> None:
        st = self.state.get(trial.trial_id)
        if st is not None:
            st.token += 1  # an epoch in flight never finishes
        trial.set_status("PAUSED")

    def stop(self, trial: Any) -> None:
        """Tune's `stop_trial`: a running trial completes with its last result; a pending
        or paused one is removed."""
        from ray.tune.experiment import Trial

        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        st = self.state.get(trial.trial_id)
        if st is not None:
            st.token += 1
        with self._compute():
            if trial.status in (Trial.PENDING, Trial.PAUSED):
                self.scheduler.on_trial_remove(self.ctrl, trial)
                self.search_alg.on_trial_complete(trial.trial_id)
            else:
                self.scheduler.on_trial_complete(self.ctrl, trial, trial.last_result)
                self.search_alg.on_trial_complete(trial.trial_id, result=trial.last_result)
        trial.set_status(Trial.TERMINATED)


def build_plan(name: str, table: ReplayTable, *, seed: int, budget: Budget,
               options: dict[str, Any] | None, space: str = "grid",
               objectives: Objectives | None = None) -> Any:
    """The registry's plan for a table: its metric and mode (or the objectives), over
    `plan_space`."""

    return plans.build(name, space=plan_space(name, table, space), metric=table.metric,
                       mode=table.mode, seed=seed, budget=budget, options=options,
                       objectives=objectives)


def replay_cell(name: str, table: ReplayTable, *, seed: int, budget: Budget,
                options: dict[str, Any] | None = None, concurrency: int = 1,
                time_budget_s: float | None = None, continuation: str = DEFAULT_MODEL,
                searcher_time: bool = True, space: str = "grid",
                objectives: Objectives | None = None) -> Simulation:
    """Run one cell (entry x table x seed) and return the finished simulation: `concurrency`
    trials train at once (the experiment's slots) and at most the budget's epochs; `space`
    is "grid" (the recorded values) or "continuous" (the table's ranges, snapped)."""
    random.seed(seed)  # PBT and others draw from the global generators
    np.random.seed(seed % 2 ** 32)
    try:  # refused while it is set up: the entry cannot search this table (not ranked)
        plan = build_plan(name, table, seed=seed, budget=budget, options=options,
                          space=space, objectives=objectives)
        sim = Simulation(plan, table, seed=seed, slots=concurrency,
                         time_budget_s=time_budget_s, epoch_budget=budget.epoch_budget,
                         continuation=continuation, searcher_time=searcher_time,
                         space=plan_space(name, table, space), space_mode=space,
                         objectives=objectives)
        if sim.host is not None:
            sim.host.start()
    except ReplayError:
        raise
    except Exception as err:
        raise ReplayError(f"{name} cannot search table {table.name!r}: "
                          f"{type(err).__name__}: {err}"[:300]) from None
    try:
        return sim.run()
    finally:
        if sim.host is not None:
            from service.backends.tune.searching import _IN_PROCESS

            _IN_PROCESS.pop(sim.host.name, None)
