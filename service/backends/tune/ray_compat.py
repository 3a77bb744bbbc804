"""Every reach into Ray's private API from the service, in one place, for the Ray this
project pins (2.60.0, pyproject.toml). Each is here because Ray offers no public way:

* a resolved checkpoint save and a training result (`ray.train._internal.session`): the
  replay backend answers PBT's save requests as Tune's controller would;
* reproducible trial ids: Tune draws them from `Trial.generate_id` inside its search
  generators, so a replay swaps that function for a counter while it runs;
* Tune's experiment syncer (`ray.train._internal.storage`): copying only the files that
  changed since the last snapshot (service.backends.tune.shared);
* Ray's single-node switch (`ray._private.ray_constants`), so an embedded Ray binds to
  loopback.

Imported only where one of these is used: a bad config still fails before Ray loads.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import ray

TESTED_RAY = "2.60.0"
"""The Ray release these reaches were written against (pyproject.toml pins it)."""
if ray.__version__ != TESTED_RAY:  # pragma: no cover - only with another Ray installed
    raise ImportError(f"service.backends reaches into Ray {TESTED_RAY}'s private API; Ray "
                      f"{ray.__version__} is installed: install ray=={TESTED_RAY}")


def training_result(checkpoint: Any, metrics: dict[str, Any]) -> Any:
    """Tune's record of one reported result (what a trial's checkpoint manager holds)."""
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult(checkpoint=checkpoint, metrics=metrics)


def resolved_save(checkpoint: Any, metrics: dict[str, Any]) -> Any:
    """A save already done, as PBT expects from `TuneController._schedule_trial_save`."""
    from ray.train._internal.session import _FutureTrainingResult

    class _Resolved(_FutureTrainingResult):
        def __init__(self, result: Any) -> None:
            self.result = result

        def resolve(self, block: bool = True) -> Any:
            return self.result

    return _Resolved(training_result(checkpoint, metrics))


@contextlib.contextmanager
def numbered_trial_ids(prefix: str) -> Iterator[None]:
    """While the block runs, the trial ids Tune draws are `prefix` and a counter (Tune's
    are random), so a replay is reproducible; Tune's own function is put back after."""
    from ray.tune.experiment import Trial

    counter = itertools.count()
    original = Trial.__dict__["generate_id"]
    Trial.generate_id = staticmethod(lambda: f"{prefix}{next(counter):05d}")
    try:
        yield
    finally:
        Trial.generate_id = original


def upload_to_fs_path(local_path: str, fs: Any, fs_path: str) -> None:
    """Tune's own copy of a whole folder to storage."""
    from ray.train._internal.storage import _upload_to_fs_path

    _upload_to_fs_path(local_path=local_path, fs=fs, fs_path=fs_path)


def filesystem_syncer() -> Any | None:
    """Tune's experiment syncer class, None where this Ray has none."""
    try:
        from ray.train._internal.storage import _FilesystemSyncer
    except ImportError:
        return None
    return _FilesystemSyncer


def single_node_ray() -> None:
    """Ray's own switch that keeps a node to this machine (its loopback)."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def set_latest_checkpoint(trial: Any, checkpoint: Any, metrics: dict[str, Any]) -> None:
    """Make `checkpoint` the trial's latest, as Tune's checkpoint manager records a save
    (PBT's exploit reads it from there)."""
    trial.run_metadata.checkpoint_manager._latest_checkpoint_result = training_result(
        checkpoint, metrics)
