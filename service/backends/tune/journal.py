"""The Tune callback that streams a run's trials into its Optuna journal
(service.backends.journal) for optuna-dashboard, on the driver and off the trials' path:
Tune's hooks only queue what they saw (a few fields of each result), and one thread of the
driver writes the journal, so neither the driver's loop nor a trial waits for the file."""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any

from ray.tune import Callback

from service.core.api import trial_budget
from service.core.layout import Cell

ROW_KEYS = ("epoch", "training_iteration", "schedule", "diverged", "terminated")
"""What the journal reads of a result besides the metric."""
CLOSE_TIMEOUT_S = 60.0
"""The longest an experiment's end waits for the journal's writes still queued."""


class JournalCallback(Callback):
    """Queues trial starts, results, ends and errors for a writer thread that keeps
    `<folder>/optuna.journal` up to date (created with the first event). A journal that
    cannot be written is reported once on stderr (the driver's log) and left alone: the
    run goes on."""

    def __init__(self, folder: str, space: dict[str, Any], metric: str, mode: str) -> None:
        self.folder, self.space, self.metric, self.mode = folder, space, metric, mode
        self._setup()

    def _setup(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the Tuner (for a resume): the settings, not the thread."""
        return {k: self.__dict__[k] for k in ("folder", "space", "metric", "mode")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _put(self, event: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write, name="optuna-journal",
                                            daemon=True)
            self._thread.start()
        self._queue.put(event)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = (trial.config or {}).get("run") or {}
        if run.get("searcher") is None:
            return
        config = {k: v for k, v in (trial.config or {}).items() if k != "run"}
        planned = trial_budget(int(run.get("epochs") or 0), config)
        cell = Cell(run["searcher"], run["backbone"], int(run["seed"]))
        self._put(("start", trial.trial_id, cell, config, planned))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        row = {k: result[k] for k in (self.metric, *ROW_KEYS) if k in result}
        self._put(("result", trial.trial_id, row))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        self._put(("end", trial.trial_id, "TERMINATED"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(("end", trial.trial_id, "ERROR"))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(CLOSE_TIMEOUT_S)
            self._thread = None

    def _write(self) -> None:
        """The writer thread: applies events in order until `close`."""
        from service.backends.journal import JournalWriter, TrialLog
        from service.core import registry
        from service.core.space import SearchSpace

        writer = JournalWriter(self.folder, SearchSpace.from_dict(self.space), self.metric,
                               self.mode)
        trials: dict[str, tuple[Cell, TrialLog, bool]] = {}
        broken = False
        events, began = 0, time.thread_time()
        while (event := self._queue.get()) is not None:
            events += 1
            if broken:
                continue
            try:
                kind, key = event[0], event[1]
                if kind == "start":
                    _, _, cell, config, planned = event
                    if key in trials:  # a paused trial resumed
                        continue
                    in_trial = registry.entry(cell.searcher).replays_schedule
                    log = TrialLog(key, config, planned)
                    trials[key] = (cell, log, in_trial)
                    writer.start(cell, log, in_trial=in_trial)
                elif key in trials:
                    cell, log, in_trial = trials[key]
                    if kind == "result":
                        writer.result(key, *log.add_row(event[2], self.metric))
                    else:
                        log.status = event[2]
                        writer.end(cell, log, in_trial=in_trial)
            except Exception as err:  # noqa: BLE001 - the dashboard's loss, never the run's
                broken = True
                print(f"optuna journal {writer.path}: not written any more "
                      f"({type(err).__name__}: {err})"[:500], file=sys.stderr, flush=True)
        # what the journal cost this driver (its log): the writer thread's own CPU time
        print(f"optuna journal {writer.path}: {events} events, "
              f"{time.thread_time() - began:.2f} s of the writer thread's CPU", flush=True)
