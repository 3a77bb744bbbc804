"""Several cells in one Tune driver (issue: time goes into training).

Every Tune experiment starts its trials' actors afresh: a new process that imports
`ray.tune` (about 2 s of CPU on a 2-core machine) and holds its trial slot meanwhile, and
`reuse_actors` reuses an actor only within its experiment. On `cpu-small` (24 cells of 6
short trials) that start was 17% of the slot time. Here the cells of a run whose plans are
searchers (with or without a Tune scheduler; no population, no controller) share one Tuner:
`CellSearcher` asks each cell's own searcher for that cell's trials, at most `parallel`
cells open at once and each within its own concurrency cap, and `CellScheduler` hands each
trial's events to its own cell's scheduler (HyperBand, ASHA, BOHB), which sees only that
cell's trials, and ends a multi-fidelity cell at its epoch budget; so every cell sees the
trials it would alone, while the actors (and the warm trial processes behind them) serve
cell after cell.

Each trial's folder is `<cell>/trial_<id>` under the run folder, as for a cell's own
experiment; Tune's experiment state (one snapshot for the group) sits in the run folder,
each cell's searcher state in its cell folder. When the group's `fit` returns, each cell
gets its final test and summary as a cell of its own would
(`service.backends.tune.experiment.finish_cell`).
"""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from service.core.layout import Cell

SEARCHER_STATE = "searcher-state-shared.pkl"
"""A shared cell's searcher state, in its cell folder (Tune's own is for the group)."""
LOAD_FILE = ".shared-driver.json"
"""In the run folder: how many cells the shared driver has open and whether it has cells
left to open, for `run_all` to start other experiments on the slots it no longer needs."""


def open_cells(folder: str | Path, parallel: int) -> int:
    """Trial slots a running shared driver may still use: all `parallel` until it has
    opened its last cell, then as many as it has cells open."""
    try:
        load = json.loads((Path(folder) / LOAD_FILE).read_text())
    except (OSError, ValueError):
        return parallel
    return parallel if load.get("unopened", 1) else int(load.get("open", parallel))


@dataclass
class CellTrials:
    """One cell inside the shared driver: its searcher (wrapped as Tune would wrap it), the
    run settings its trials carry, and what it has asked and been told so far."""

    name: str
    searcher: Any
    run: dict[str, Any]
    constants: dict[str, Any]
    num_samples: int
    concurrency: int
    suggested: int = 0
    live: set[str] = field(default_factory=set)
    exhausted: bool = False
    opened_unix: float | None = None
    done_unix: float | None = None
    saved_done: bool = False  # its searcher's file was written after it was done

    @property
    def done(self) -> bool:
        return self.done_unix is not None


def _chain(searcher: Any) -> tuple[list[Any], Any]:
    """The wrappers (outermost first) and the innermost searcher, as Tune's SearchGenerator
    walks them when it saves a searcher."""
    wrappers = []
    while hasattr(searcher, "searcher"):
        wrappers.append(searcher)
        searcher = searcher.searcher
    return wrappers, searcher


class CellSearcher(Searcher):
    """Tune's searcher for several cells: each trial comes from one cell's searcher and is
    reported back to that one only. Cells open in order, at most `parallel` at once (as
    `max_parallel_experiments` experiments would run side by side); a cell is done once its
    searcher is exhausted and its last trial ended."""

    def __init__(self, cells: list[CellTrials], parallel: int, folder: str,
                 metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.cells = cells
        self.parallel = max(1, parallel)
        self.folder = folder  # the run folder, where each cell's searcher state lives
        self.owner: dict[str, str] = {}
        self.started_unix = time.time()

    def _cell(self, name: str) -> CellTrials:
        return next(c for c in self.cells if c.name == name)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        from ray.tune.search.util import _set_search_properties_backwards_compatible

        for cell in self.cells:  # each with its own space, as its own Tuner would pass
            own = {**cell.constants, "run": cell.run}
            _set_search_properties_backwards_compatible(
                cell.searcher.set_search_properties, metric, mode, own, **spec)
        return True

    def _finish(self, cell: CellTrials) -> None:
        if not cell.done and cell.exhausted and not cell.live:
            cell.done_unix = time.time()
            self._publish()

    def _publish(self) -> None:
        """Write LOAD_FILE (atomically: `run_all` reads it while this runs)."""
        load = {"open": sum(c.opened_unix is not None and not c.done for c in self.cells),
                "unopened": sum(c.opened_unix is None for c in self.cells)}
        path = Path(self.folder) / LOAD_FILE
        try:
            path.with_suffix(".tmp").write_text(json.dumps(load))
            path.with_suffix(".tmp").replace(path)
        except OSError:
            pass  # only an optimisation of run_all's scheduling

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        opened = sum(c.opened_unix is not None and not c.done for c in self.cells)
        for cell in self.cells:
            if cell.done or cell.exhausted or len(cell.live) >= cell.concurrency:
                continue
            if cell.opened_unix is None:
                if opened >= self.parallel:
                    break  # cells open in order
                cell.opened_unix = time.time()
                opened += 1
                self._publish()
            config = cell.searcher.suggest(trial_id)
            if config == Searcher.FINISHED:
                cell.exhausted = True
                self._finish(cell)
                opened -= cell.done  # closed: the next cell may open
                continue
            if config is None:
                continue
            cell.suggested += 1
            cell.exhausted = cell.suggested >= cell.num_samples
            cell.live.add(trial_id)
            self.owner[trial_id] = cell.name
            return {**cell.constants, **config, "run": cell.run}
        if all(c.exhausted for c in self.cells):
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self._cell(self.owner[trial_id]).searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.owner:
            return
        cell = self._cell(self.owner[trial_id])
        cell.searcher.on_trial_complete(trial_id, result=result, error=error)
        cell.live.discard(trial_id)
        self._finish(cell)

    # HyperBandForBOHB tells the searcher of its pauses (Tune's ConcurrencyLimiter and
    # BOHB's searcher count paused trials apart): to the trial's own cell's searcher.

    def on_pause(self, trial_id: str) -> None:
        if trial_id in self.owner:
            self._cell(self.owner[trial_id]).searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        if trial_id in self.owner:
            self._cell(self.owner[trial_id]).searcher.on_unpause(trial_id)

    def close(self, name: str) -> None:
        """Suggest nothing more for a cell (its epoch budget is spent)."""
        cell = self._cell(name)
        cell.exhausted = True
        self._finish(cell)

    # Tune saves this searcher's file with every experiment snapshot; each cell's own
    # searcher is saved as Tune's SearchGenerator saves one: each wrapper's state, and
    # the innermost searcher's file (save), here in the cell's folder next to its trials.

    def save(self, checkpoint_path: str) -> None:
        staging = Path(checkpoint_path).parent
        cells = {}
        for cell in self.cells:
            wrappers, base = _chain(cell.searcher)
            # A cell's searcher changes only while it is open: an unopened one is restored
            # as built, a done one from the file saved after its last trial.
            if cell.opened_unix is not None and not cell.saved_done:
                (staging / cell.name).mkdir(parents=True, exist_ok=True)
                base.save(str(staging / cell.name / SEARCHER_STATE))
                cell.saved_done = cell.done
            cells[cell.name] = {
                "wrappers": [w.get_state() for w in wrappers], "suggested": cell.suggested,
                "live": sorted(cell.live), "exhausted": cell.exhausted,
                "opened_unix": cell.opened_unix, "done_unix": cell.done_unix}
        state = {"cells": cells, "owner": self.owner, "started_unix": self.started_unix}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.owner, self.started_unix = dict(state["owner"]), state["started_unix"]
        for cell in self.cells:
            saved = state["cells"].get(cell.name)
            if saved is None:
                continue
            wrappers, base = _chain(cell.searcher)
            for wrapper, wrapper_state in zip(wrappers, saved["wrappers"], strict=True):
                wrapper.set_state(wrapper_state)
            path = Path(self.folder) / cell.name / SEARCHER_STATE
            if path.exists():
                base.restore(str(path))
            cell.suggested, cell.live = saved["suggested"], set(saved["live"])
            cell.exhausted, cell.opened_unix = saved["exhausted"], saved["opened_unix"]
            cell.done_unix = saved["done_unix"]

    def timeline(self) -> dict[str, dict[str, float | None]]:
        """Per cell, when it opened (the first cells: when the driver started, so the
        group's Tune start-up counts as theirs) and when its last trial ended."""
        first = [c.name for c in self.cells[:self.parallel]]
        return {c.name: {"started_unix": self.started_unix if c.name in first
                         else c.opened_unix, "fit_ended_unix": c.done_unix}
                for c in self.cells}


class _CellView:
    """Tune's controller as one cell's scheduler sees it: only that cell's trials (BOHB's
    scheduler, for one, waits until none of "the" trials is running), everything else
    the controller itself (`stop_trial`, `pause_trial`, `search_alg`, ...)."""

    def __init__(self, controller: Any, trials: Callable[[], list[Any]]) -> None:
        self._controller, self._trials = controller, trials  # listed only when asked

    def get_trials(self) -> list[Any]:
        return self._trials()

    def get_live_trials(self) -> list[Any]:
        live = set(self._controller.get_live_trials())
        return [t for t in self._trials() if t in live]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class CellScheduler(TrialScheduler):
    """Tune's scheduler for several cells: each trial's events go to its own cell's
    scheduler (HyperBand, ASHA, BOHB as the cell's own Tuner would have it; FIFO for a
    searcher without one), which sees only that cell's trials, and the trial to run next is the
    first one a cell's scheduler offers, cells in order. A multi-fidelity cell ends as its
    own experiment would (`service.backends.tune.experiment.EpochBudgetStopper`): once its
    trials have trained its epoch budget, its other trials stop (a running one loses its
    epoch in flight, as there) and its searcher suggests nothing more."""

    def __init__(self, searcher: CellSearcher, schedulers: dict[str, TrialScheduler | None],
                 budgets: dict[str, int | None], metric: str, mode: str) -> None:
        super().__init__()
        self.searcher = searcher
        self.schedulers = {name: s or FIFOScheduler() for name, s in schedulers.items()}
        from service.backends.tune.experiment import EpochBudgetStopper

        self.budgets = {name: EpochBudgetStopper(b) for name, b in budgets.items()
                        if b is not None}
        self._metric, self._mode = metric, mode
        self._supports_buffered_results = all(
            s.supports_buffered_results for s in self.schedulers.values())

    def _name(self, trial: Any) -> str | None:
        return self.searcher.owner.get(trial.trial_id) or cell_of(trial.config)

    def _view(self, controller: Any, name: str | None) -> _CellView:
        return _CellView(controller, lambda: [t for t in controller.get_trials()
                                              if self._name(t) == name])

    def _route(self, controller: Any, trial: Any) -> tuple[TrialScheduler, _CellView]:
        name = self._name(trial)
        return self.schedulers.get(name) or FIFOScheduler(), self._view(controller, name)

    def set_search_properties(self, metric: str | None, mode: str | None,
                              **spec: Any) -> bool:
        return True  # each cell's scheduler was built with the run's metric and mode

    def _spent(self, trial: Any, result: dict[str, Any] | None) -> bool:
        """Count the trial's epochs toward its cell's budget; whether it is spent."""
        stopper = self.budgets.get(self._name(trial))
        if stopper is None:
            return False
        stopper(trial.trial_id, result or {})
        return stopper.stop_all()

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self._spent(trial, trial.last_result)  # a restored trial brings its epochs
        scheduler, view = self._route(controller, trial)
        scheduler.on_trial_add(view, trial)

    def on_trial_error(self, controller: Any, trial: Any) -> None:
        scheduler, view = self._route(controller, trial)
        scheduler.on_trial_error(view, trial)

    def on_trial_complete(self, controller: Any, trial: Any, result: dict) -> None:
        scheduler, view = self._route(controller, trial)
        scheduler.on_trial_complete(view, trial, result)

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        scheduler, view = self._route(controller, trial)
        scheduler.on_trial_remove(view, trial)

    def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
        scheduler, view = self._route(controller, trial)
        decision = scheduler.on_trial_result(view, trial, result)
        if not self._spent(trial, result):
            return decision
        name = self._name(trial)
        self.searcher.close(name)
        for other in view.get_trials():
            if other is not trial and not other.is_finished():
                controller.stop_trial(other)
        return TrialScheduler.STOP

    def choose_trial_to_run(self, controller: Any) -> Any:
        by_cell: dict[str | None, list[Any]] = {}
        for trial in controller.get_trials():
            by_cell.setdefault(self._name(trial), []).append(trial)
        for name, scheduler in self.schedulers.items():
            if by_cell.get(name):
                trial = scheduler.choose_trial_to_run(
                    _CellView(controller, lambda trials=by_cell[name]: trials))
                if trial is not None:
                    return trial
        return None

    def debug_string(self) -> str:
        return "One scheduler per cell: " + "; ".join(
            f"{name}: {type(s).__name__}" for name, s in self.schedulers.items())


def shared_dirname(trial: Any) -> str:
    """`<cell>/trial_<id>`: a shared driver's trial sits in its cell's folder. Tune refuses
    a '/' in the name this returns, so the nested folder is set where Tune would put the
    name (the trial's log folder and its storage's trial folder, which Tune keeps when the
    folder is already set and restores with the trial); the name returned is the last part."""
    name = f"trial_{trial.trial_id}"
    trial.relative_logdir = f"{cell_of(trial.config)}/{name}"
    trial.storage.trial_dir_name = trial.relative_logdir
    return name


_SYNCED: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
"""Per (staging folder, storage folder): each file's (mtime_ns, size) when last copied."""


def changed_files(local_path: str, fs_path: str) -> list[tuple[str, bytes]]:
    """The files of `local_path` that changed since the last call for the same folders
    (all on the first), read now: Tune calls this right after it wrote its experiment
    snapshot, so what reaches storage is the staging folder at that instant, while its loop
    goes on appending to the trials' result files. (A copy that read them later could store
    a trial's newer rows beside the older snapshot: resumed, that trial reran an epoch.)"""
    seen = _SYNCED.setdefault((local_path, fs_path), {})
    out = []
    for root, _, files in os.walk(local_path):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, local_path)
            try:
                stat = os.stat(full)
                key = (stat.st_mtime_ns, stat.st_size)
                if seen.get(rel) == key:
                    continue
                with open(full, "rb") as f:
                    out.append((rel, f.read()))
            except FileNotFoundError:  # a temporary file renamed meanwhile
                continue
            seen[rel] = key
    return out


def write_files(files: list[tuple[str, bytes]], fs: Any, fs_path: str,
                local_path: str | None = None) -> int:
    """Write `changed_files`' snapshot under `fs_path` on `fs`; how many files. If that
    fails, the next snapshot copies every file again (Tune logs the failure)."""
    made: set[str] = set()
    try:
        for rel, data in files:
            target = "/".join([fs_path.rstrip("/"), *Path(rel).parts])
            parent = target.rsplit("/", 1)[0]
            if parent not in made:
                fs.create_dir(parent, recursive=True)
                made.add(parent)
            with fs.open_output_stream(target) as out:
                out.write(data)
    except Exception:
        _SYNCED.pop((local_path or "", fs_path), None)
        raise
    return len(files)


_PENDING: dict[str, list[tuple[str, bytes]]] = {}
"""Snapshots read by `changed_files` and not yet written, by token."""


def write_pending(token: str, fs: Any, fs_path: str, local_path: str) -> int:
    """Write the snapshot `token` names; a retry of a written (or failed) one copies the
    whole folder, as Tune's own sync does."""
    files = _PENDING.pop(token, None)
    if files is None:
        from service.backends.tune.ray_compat import upload_to_fs_path

        upload_to_fs_path(local_path=local_path, fs=fs, fs_path=fs_path)
        return -1
    return write_files(files, fs, fs_path, local_path)


def install_incremental_sync() -> bool:
    """Make Tune's experiment syncer in this process copy only the files that changed
    since its last copy (`changed_files`, `write_pending`); False where Ray's syncer is not
    the one this was written against (Ray's full copy stays). Tune copies the driver's
    whole staging folder at every experiment snapshot (every 2 s, and after every
    `keep_checkpoints` checkpoints of a trial): for a shared driver's 120 trials that was
    600 files each time, CPU the trials lost. The result on storage is the same."""
    from service.backends.tune.ray_compat import filesystem_syncer

    _FilesystemSyncer = filesystem_syncer()  # noqa: N806 - Ray's class, named as Ray names it
    if _FilesystemSyncer is None:
        return False
    if getattr(_FilesystemSyncer, "_incremental", False):
        return True
    if not hasattr(_FilesystemSyncer, "_sync_up_command"):
        return False
    _FilesystemSyncer._incremental = True  # noqa: SLF001 - once per process

    original = _FilesystemSyncer._sync_up_command

    def _sync_up_command(self: Any, local_path: str, uri: str,
                         exclude: list | None = None) -> tuple[Any, dict[str, Any]]:
        if exclude or not os.path.isdir(local_path):
            return original(self, local_path, uri, exclude)
        # Read now, written by Tune's background sync. The command is kept on the syncer,
        # which Tune pickles into every trial's saved state: it names the read files.
        token = uuid.uuid4().hex
        _PENDING[token] = changed_files(local_path, uri)
        return write_pending, {"token": token, "fs": self.storage_filesystem,
                               "fs_path": uri, "local_path": local_path}

    _FilesystemSyncer._sync_up_command = _sync_up_command  # noqa: SLF001
    return True


@dataclass
class TrialResult:
    """What `service.backends.tune.experiment.best_trial` and `finish_cell` read of a trial,
    built from the driver's own records while the run goes on (a ResultGrid exists only at
    the end)."""

    config: dict[str, Any]
    metrics_dataframe: Any
    checkpoint: Any
    error: Any = None


class Finisher:
    """Gives each cell its final test and summary as soon as its last trial ended, in a
    background thread, while the shared driver runs the other cells: a live report shows
    a finished cell at once, as it would for a cell of its own. The rows come from the
    results this driver saw; a cell with trials from before a resume is finished at the
    end instead, from Tune's results."""

    def __init__(self, cfg: Any, cells: list[Cell], searcher: CellSearcher,
                 fit_started: float) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.cfg, self.searcher, self.fit_started = cfg, searcher, fit_started
        self.cells = {c.name: c for c in cells}
        self.rows: dict[str, list[dict[str, Any]]] = {}  # of trials started in this driver
        self.futures: dict[str, Any] = {}
        # one thread per slot: a retraining waits for a reserved slot, the others need not
        self.pool = ThreadPoolExecutor(max(1, searcher.parallel),
                                       thread_name_prefix="finish-cell")

    def on_start(self, trial: Any) -> None:
        self.rows.setdefault(trial.trial_id, [])

    def on_result(self, trial: Any, result: dict[str, Any]) -> None:
        if trial.trial_id in self.rows:
            self.rows[trial.trial_id].append(dict(result))

    def check(self, trials: list[Any]) -> None:
        """Finish every cell that is done and was run whole by this driver."""
        ready = [c.name for c in self.searcher.cells
                 if c.done and c.name not in self.futures and c.name in self.cells]
        if not ready:  # the usual case, on every few steps of Tune's loop: cheap
            return
        times = self.searcher.timeline()
        for name in ready:
            own = [t for t in trials if self.searcher.owner.get(t.trial_id) == name]
            if any(t.trial_id not in self.rows or not t.is_finished() for t in own):
                continue  # trials from before a resume: at the end
            import pandas as pd

            results = [TrialResult(t.config, pd.DataFrame(self.rows[t.trial_id]),
                                   t.checkpoint, True if t.status == "ERROR" else None)
                       for t in own]
            self.futures[name] = self.pool.submit(
                self._finish, self.cells[name], results, times[name])

    def _finish(self, cell: Cell, results: list[TrialResult],
                when: dict[str, float | None]) -> dict[str, Any]:
        from service.backends.tune.experiment import finish_cell

        return finish_cell(self.cfg, cell, results,
                           started=when.get("started_unix") or self.fit_started,
                           fit_started=self.fit_started,
                           fit_ended=when.get("fit_ended_unix") or time.time(), shared=True)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Wait for the cells finished meanwhile; a cell whose finishing failed is finished
        again at the end."""
        self.pool.shutdown(wait=True)
        out = {}
        for name, future in self.futures.items():
            try:
                out[name] = future.result()
            except Exception:  # noqa: BLE001 - retried from Tune's results at the end
                pass
        return out


_FINISHERS: dict[str, Finisher] = {}
"""The running shared driver's Finisher per run folder (its callback is pickled with the
Tuner, so it finds the Finisher of the process that runs or resumes it here)."""


def cell_of(config: dict[str, Any] | None) -> str | None:
    """The cell folder name of a trial's config."""
    run = (config or {}).get("run") or {}
    return Cell(run["searcher"], run["backbone"], int(run["seed"])).name if run else None


class FinishCells(Callback):
    """The Tune callback that feeds the run's Finisher (found by run folder)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (finisher := _FINISHERS.get(self.folder)) is not None:
            finisher.on_start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if (finisher := _FINISHERS.get(self.folder)) is not None:
            finisher.on_result(trial, result)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if (finisher := _FINISHERS.get(self.folder)) is not None and iteration % 5 == 0:
            finisher.check(trials)


def run_shared(cfg_dict: dict[str, Any], cells: list[Cell], *, parallel: int,
               restore: bool = False, log_file: str | None = None,
               warm_pool: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) `cells` in one Tune driver, then each one's final test; one summary
    per cell (cells that wrote theirs before a resume are not run again)."""
    from service.core.progress import output_to

    with output_to(log_file):
        return _run_shared(cfg_dict, cells, parallel=parallel, restore=restore,
                           warm_pool=warm_pool)


def _run_shared(cfg_dict: dict[str, Any], cells: list[Cell], *, parallel: int,
                restore: bool, warm_pool: str | None) -> list[dict[str, Any]]:
    from ray import tune

    from service.backends.tune.experiment import driver_environment, finish_cell, set_aside_orphans
    from service.backends.tune.warm import train_trial
    from service.core.config import build_config
    from service.core.layout import SUMMARY_FILE

    driver_environment()
    install_incremental_sync()
    cfg = build_config(cfg_dict)
    folder = cfg.experiment_dir
    (folder / LOAD_FILE).unlink(missing_ok=True)  # a resumed run's last one is stale
    done = {c.name: json.loads((folder / c.name / SUMMARY_FILE).read_text())
            for c in cells if restore and (folder / c.name / SUMMARY_FILE).exists()}
    todo = [c for c in cells if c.name not in done]
    if not todo:
        return [{**done[c.name], "resumed": "already done"} for c in cells]
    resources = {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    if restore and tune.Tuner.can_restore(str(folder)):
        for cell in todo:
            set_aside_orphans(folder / cell.name, snapshots=folder)
        tuner = tune.Tuner.restore(str(folder), tune.with_resources(train_trial, resources),
                                   resume_errored=True)
    else:
        tuner = build_shared_tuner(cfg, todo, parallel, warm_pool=warm_pool)
    searcher = tuner._local_tuner._tune_config.search_alg  # noqa: SLF001 - its cells
    fit_start, cpu_start = time.time(), time.process_time()
    finisher = Finisher(cfg, todo, searcher, fit_start) if isinstance(
        searcher, CellSearcher) else None
    if finisher is not None:
        _FINISHERS[str(folder)] = finisher
    try:
        results = tuner.fit()
    finally:
        _FINISHERS.pop(str(folder), None)
    fit_end = time.time()
    print(f"shared driver: {len(todo)} cells in {fit_end - fit_start:.1f} s, "
          f"{time.process_time() - cpu_start:.1f} s of this process's CPU", flush=True)
    finished = finisher.summaries() if finisher is not None else {}
    by_cell: dict[str, list[Any]] = {c.name: [] for c in todo}
    for result in results:
        name = cell_of(result.config)
        if name in by_cell:
            by_cell[name].append(result)
    times = searcher.timeline() if isinstance(searcher, CellSearcher) else {}
    summaries = []
    for cell in cells:
        if cell.name in done:
            summaries.append({**done[cell.name], "resumed": "already done"})
        elif cell.name in finished:
            summaries.append(finished[cell.name])
        else:
            when = times.get(cell.name, {})
            summaries.append(finish_cell(
                cfg, cell, by_cell[cell.name], started=when.get("started_unix") or fit_start,
                fit_started=fit_start, fit_ended=when.get("fit_ended_unix") or fit_end,
                shared=True))
    return summaries


def build_shared_tuner(cfg: Any, cells: list[Cell], parallel: int, trainable: Any = None,
                       warm_pool: str | None = None) -> Any:
    """One Tuner for `cells` (each `shareable`): every cell's plan, searcher and run
    settings as its own Tuner would have them (`service.backends.tune.experiment.cell_plan`)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from service.backends.tune.experiment import (
        cell_plan,
        hparams_logger,
        journal_logger,
        mlflow_logger,
        race_metrics,
    )
    from service.backends.tune.warm import train_trial

    members, schedulers, budgets = [], {}, {}
    for cell in cells:
        plan, algorithm, run = cell_plan(cfg, cell, warm_pool=warm_pool)
        cap = plan.concurrency(cfg.concurrency)
        members.append(CellTrials(
            cell.name, ConcurrencyLimiter(algorithm, max_concurrent=cap), run.as_dict(),
            dict(plan.param_space), plan.num_samples, cap))
        schedulers[cell.name] = plan.scheduler
        budgets[cell.name] = plan.epoch_budget if plan.multi_fidelity else None
    searcher = CellSearcher(members, parallel, str(cfg.experiment_dir), cfg.metric, cfg.mode)
    scheduler = CellScheduler(searcher, schedulers, budgets, cfg.metric, cfg.mode)
    resources = {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    return tune.Tuner(
        tune.with_resources(trainable or train_trial, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler,
            num_samples=sum(m.num_samples for m in members),
            reuse_actors=cfg.reuse_actors, trial_dirname_creator=shared_dirname),
        run_config=tune.RunConfig(
            name=cfg.experiment_dir.name, storage_path=str(cfg.experiment_dir.parent),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[hparams_logger(), FinishCells(str(cfg.experiment_dir)),
                       *journal_logger(cfg), *mlflow_logger(cfg), race_metrics(cfg)],
            verbose=0),
    )
