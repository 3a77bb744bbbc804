"""The searchers' race as Ray metrics (`ray.util.metrics`), so the Ray dashboard's Metrics
view and Prometheus show it on a cluster: per searcher of an experiment, the best metric so
far, the trials done and failed, and the epochs trained. Recorded on the driver by a Tune
callback; Ray's metrics agent exports them with the prefix `ray_`."""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from service.backends.tune.searching import is_failure

BEST = "emerald_tune_best_metric"
TRIALS_DONE = "emerald_tune_trials_done"
TRIALS_FAILED = "emerald_tune_trials_failed"
EPOCHS = "emerald_tune_epochs_trained"
TAGS = ("experiment", "searcher")


class RaceMetrics(Callback):
    """Updates the race's gauges and counters from Tune's trial events (one instance per
    Tune driver; a shared driver runs every searcher's cells, so tags say which)."""

    def __init__(self, experiment: str, metric: str, mode: str) -> None:
        self.experiment, self.metric, self.mode = experiment, metric, mode
        self._setup()

    def _setup(self) -> None:
        self._metrics: dict[str, Any] | None = None
        self._best: dict[str, float] = {}
        self._last: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the Tuner (for a resume): the settings, not Ray's metric handles."""
        return {k: self.__dict__[k] for k in ("experiment", "metric", "mode")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _handles(self) -> dict[str, Any]:
        if self._metrics is None:
            from ray.util.metrics import Counter, Gauge

            self._metrics = {
                BEST: Gauge(BEST, f"best {self.metric} so far ({self.mode})", TAGS),
                TRIALS_DONE: Counter(TRIALS_DONE, "trials ended (failed ones too)", TAGS),
                TRIALS_FAILED: Counter(TRIALS_FAILED, "trials that failed: an error, a "
                                       "diverged or terminated trial, no finite metric", TAGS),
                EPOCHS: Counter(EPOCHS, "epochs trained", TAGS),
            }
        return self._metrics

    def _tags(self, trial: Any) -> dict[str, str] | None:
        searcher = ((trial.config or {}).get("run") or {}).get("searcher")
        return {"experiment": self.experiment, "searcher": searcher} if searcher else None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        tags = self._tags(trial)
        if tags is None:
            return
        self._last[trial.trial_id] = result
        handles = self._handles()
        handles[EPOCHS].inc(1.0, tags)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            sign = 1.0 if self.mode == "max" else -1.0
            best = self._best.get(tags["searcher"])
            if best is None or sign * value > sign * best:
                self._best[tags["searcher"]] = float(value)
                handles[BEST].set(float(value), tags)

    def _ended(self, trial: Any, failed: bool) -> None:
        tags = self._tags(trial)
        if tags is None:
            return
        handles = self._handles()
        handles[TRIALS_DONE].inc(1.0, tags)
        last = self._last.pop(trial.trial_id, None)
        if failed or is_failure(last, self.metric):
            handles[TRIALS_FAILED].inc(1.0, tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        self._ended(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, failed=True)
