"""Fault tolerance inside one experiment: a trial whose worker process is SIGKILLed
mid-run continues from its last checkpoint (FailureConfig), and a trial that raises (a
simulated CUDA out-of-memory) ends as errored, reaches the searcher as a failure, and the
other trials go on."""

from __future__ import annotations

import csv
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from service.backends.tune.experiment import Cell, build_tuner
from service.backends.tune.trainable import CHECKPOINT_PREFIX, train_trial
from service.core.config import build_config
from tests.results import trial_rows


def _cfg(storage: Path, **over: Any):
    return build_config({
        "name": "faults", "storage": str(storage), "searchers": ["emerald"],
        "backbones": ["resnet18@0.0625"], "seeds": [0], "concurrency": 1,
        "dataset": {"name": "synthetic", "max_train": 400, "image_size": 24},
        "final_test": False, **over,
    })


def test_killed_trial_worker_resumes_from_checkpoint(ray_session, tmp_path: Path) -> None:
    epochs = 5
    cfg = _cfg(tmp_path, budget={"trials": 1, "epochs": epochs})
    tuner = build_tuner(cfg, Cell("random", "resnet18@0.0625", 0))
    killed: list[int] = []

    def kill_mid_run() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for rows in trial_rows(tmp_path / "faults").values():
                if 2 <= rows[-1]["training_iteration"] < epochs:
                    os.kill(rows[-1]["pid"], signal.SIGKILL)
                    killed.append(rows[-1]["pid"])
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_mid_run, daemon=True)
    watcher.start()
    results = tuner.fit()
    watcher.join()
    assert killed, "the trial finished before its worker could be killed"
    assert not results.errors and results[0].metrics["training_iteration"] == epochs
    (rows,) = trial_rows(tmp_path / "faults").values()
    before = [r for r in rows if r["pid"] == killed[0]]
    after = [r for r in rows if r["pid"] != killed[0]]
    assert before and after and len({r["pid"] for r in after}) == 1
    # Restarted from the checkpoint of its last reported epoch, not from epoch 1.
    assert after[0]["epoch"] == before[-1]["epoch"] + 1
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    # The killed process's epoch folders: removed by the process that took over.
    left = Path(tempfile.gettempdir()).glob(f"{CHECKPOINT_PREFIX}{killed[0]}@*")
    assert not list(left)


def test_trial_raising_cuda_oom_is_a_searcher_failure(ray_session, tmp_path: Path) -> None:
    marker = tmp_path / "oom_trial"

    def oom_once(config: dict[str, Any]) -> None:
        """The first trial to start raises CUDA OOM on every attempt; the rest train."""
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, trial_id.encode())
            os.close(fd)
        except FileExistsError:
            pass
        if marker.read_text() == trial_id:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                         "(simulated)")
        train_trial(config)

    cfg = _cfg(tmp_path, budget={"trials": 3, "epochs": 1})
    cell = Cell("emerald", "resnet18@0.0625", 0)
    results = build_tuner(cfg, cell, trainable=oom_once).fit()
    assert len(results) == 3 and len(results.errors) == 1
    assert "out of memory" in str(results.errors[0])
    finished = [r for r in results if r.error is None]
    assert len(finished) == 2 and all(r.metrics["val_acc"] > 0 for r in finished)
    with open(tmp_path / "faults" / cell.name / "agent_steps.csv") as f:
        steps = {s["trial_id"]: s for s in csv.DictReader(f)}
    bad = marker.read_text()
    assert len(steps) == 3 and steps[bad]["failed"] == "True"
    assert float(steps[bad]["reward"]) == -1.0  # the failure penalty (seed 001)
    assert all(s["failed"] == "False" for t, s in steps.items() if t != bad)
