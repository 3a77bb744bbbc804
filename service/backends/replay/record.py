"""`python -m service record`: train every configuration of a design once per seed with the
real trainable, as ordinary Tune trials, and write one table per backbone.

The design is the full grid of the discretised space (`record.points` values per range,
`record.points_per` per name, log-spaced on log ranges) or `record.samples` seeded samples.
Each (configuration, seed) is one trial of one Tune experiment per backbone, so the record
uses the cluster, resumes after a crash (`Tuner.restore`: finished trials are never trained
again) and prints its progress. The table is written only once every trial has finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.core.api import ConfigError, plain
from service.core.config import ExperimentConfig
from service.core.table import EPOCH, SEED, TEST, TableMeta, write_table

try:  # Ray is installed with the service; the import stays lazy for validation paths
    from ray.tune import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]

RECORD_COLUMNS = ("val_acc", "val_loss", "train_acc", "train_loss", "grad_norm",
                  "epoch_time_s", "images_per_s", "diverged", "model_size_mb", "num_parameters")
DESIGN_FILE = "design.json"


MAX_DESIGN = 1_000_000
"""Configurations a recording trains at most (a grid of 1000 points on three ranges is
10**9, which filled the memory before any check)."""


def design(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The configurations to record (searched names only; constants go to every trial)."""
    space = cfg.search_space
    rec = cfg.record
    for name in rec.points_per:
        if name not in space.names:
            raise ConfigError(f"record.points_per.{name}: not a dimension of space "
                              f"({', '.join(space.names)})")
    if rec.samples is None:
        size = math.prod(len(d.grid(rec.points_per.get(d.name, rec.points)))
                         for d in space.searched)
        if size > MAX_DESIGN:
            raise ConfigError(f"record.points: the grid holds {size:,} configurations, more "
                              f"than {MAX_DESIGN:,} a recording trains; lower record.points "
                              "(or points_per), or give record.samples")
    if rec.samples is not None:
        rng = np.random.default_rng(cfg.seeds[0])
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(rec.samples * 20):
            config = plain(space.sample(rng))
            seen.setdefault(json.dumps(config, sort_keys=True), config)
            if len(seen) == rec.samples:
                break
        return list(seen.values())
    return space.grid(rec.points, rec.points_per)


def table_path(cfg: ExperimentConfig, backbone: str) -> Path:
    folder = Path(cfg.record.out).expanduser() if cfg.record.out else cfg.experiment_dir
    tag = f"-{cfg.record.tag}" if cfg.record.tag else ""
    return folder / f"{cfg.dataset.name}-{backbone.replace('@', '_w')}{tag}.parquet"


def curve_file(folder: str | Path, point: dict[str, Any]) -> Path:
    """Where a finished curve is kept: one JSON file per (configuration, seed)."""
    key = hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]
    return Path(folder) / f"{key}.json"


def record_trial(config: dict[str, Any]) -> None:
    """Tune trainable of one recording: the point's hyperparameters on its seed, for the
    budget's epochs, every epoch reported, the test split scored after the last. A
    finished curve is kept in `curves/` (written atomically) and a trial that finds its
    curve there reports it without training: Tune snapshots its experiment every few
    seconds, so after a crash it may start a trial that had finished since the snapshot,
    and that curve must not be trained (or recorded) twice. An unfinished trial starts
    again from its first epoch (no checkpoints: a trial is short)."""
    from ray import tune

    from service.backends.tune.trainable import train_loop

    point = config["point"]
    path = curve_file(config["curves"], point)
    if path.is_file():
        for row in json.loads(path.read_text()):
            tune.report(row)
        return
    run = {**config["run"], "seed": int(point["seed"]), "test_last": True}
    trial = {**point["hp"], "run": run}
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any], _state: Any) -> None:
        rows.append({k: row[k] for k in (*RECORD_COLUMNS, EPOCH, TEST, "test_loss", "device")
                     if k in row})
        tune.report(row)

    train_loop(trial, report=report, trial_id=tune.get_context().get_trial_id() or "local")
    if rows and (rows[-1].get("diverged") or len(rows) == run["epochs"]):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.replace(path)


class Progress(Callback):
    """One line per ~2% of finished recordings, with the rate and the time left."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.done, self.start = 0, time.time()

    def setup(self, **info: Any) -> None:
        self.done, self.start = 0, time.time()  # again after a resume

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        self.done += 1
        finished = len({t.trial_id for t in trials if t.status == "TERMINATED"} | {trial.trial_id})
        spent = time.time() - self.start
        left = spent / self.done * max(0, self.total - finished)
        if finished == self.total or self.done % max(1, self.total // 50) == 0:
            print(f"[record {self.label}] {finished}/{self.total} curves "
                  f"({100 * finished / self.total:.0f}%), {spent:.0f} s this run, "
                  f"about {left:.0f} s left", flush=True)


def _device(rows: Any) -> str:
    devices = sorted({str(d) for d in rows.get("device", [])}) if "device" in rows else []
    cpu = platform.processor() or platform.machine()
    return f"{', '.join(devices) or 'cpu'} ({cpu}, {os.cpu_count()} cores)"


def _versions() -> dict[str, str]:
    import ray
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "emerald_tune": "0.1.0"}


def record_backbone(cfg: ExperimentConfig, backbone: str, points: list[dict[str, Any]],
                    log: Any = print) -> Path:
    """Record (or resume recording) one backbone's table; returns its path."""
    import pandas as pd
    from ray import tune

    from service.backends.tune.experiment import _trial_dirname
    from service.backends.tune.trainable import RunSettings

    label = f"record__{backbone.replace('@', '_w')}"
    folder = cfg.experiment_dir / label
    grid = [{"hp": hp, "seed": seed} for hp in points for seed in cfg.seeds]
    curves = folder.parent / f"{label}.curves"
    resources = {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    trainable = tune.with_resources(record_trial, resources)
    start = time.time()
    dataset = cfg.dataset.model_dump(exclude_none=True)
    run = RunSettings(backbone=backbone, epochs=cfg.budget.epochs, dataset=dataset,
                      threads=max(1, int(cfg.resources.cpus)))
    if tune.Tuner.can_restore(str(folder)):
        log(f"[record {backbone}] resuming {folder}")
        tuner = tune.Tuner.restore(str(folder), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={**cfg.search_space.constants, "point": tune.grid_search(grid),
                         "curves": str(curves), "run": run.as_dict()},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.concurrency,
                                        reuse_actors=cfg.reuse_actors,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=label, storage_path=str(cfg.experiment_dir),
                                      failure_config=tune.FailureConfig(
                                          max_failures=cfg.max_failures),
                                      callbacks=[Progress(len(grid), backbone)],
                                      verbose=0),
        )
    failed = len(tuner.fit().errors)
    frames = []
    for point in grid:
        path = curve_file(curves, point)
        if not path.is_file():
            continue
        rows = pd.DataFrame(json.loads(path.read_text()))
        for name, value in {**cfg.search_space.constants, **point["hp"]}.items():
            rows[name] = [value] * len(rows)
        rows[SEED] = int(point["seed"])
        frames.append(rows)
    if len(frames) != len(grid):
        raise RuntimeError(f"record {backbone}: {len(grid) - len(frames)} of {len(grid)} "
                           f"curves missing ({failed} trials errored); run the same command "
                           "again to resume them")
    rows = pd.concat(frames, ignore_index=True)
    meta = TableMeta(space=cfg.search_space.to_dict(), metric=cfg.metric, mode=cfg.mode,
                     dataset=cfg.dataset.name, backbone=backbone,
                     command="python -m service " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                     device=_device(rows), versions=_versions(),
                     recorded_s=round(time.time() - start, 1),
                     extra={"seeds": list(cfg.seeds), "epochs": cfg.budget.epochs,
                            "design": "samples" if cfg.record.samples else "grid",
                            "curves": len(grid),
                            # what service.backends.replay.verify retrains a schedule on
                            "run": {k: v for k, v in run.as_dict().items()
                                    if k in ("backbone", "epochs", "dataset", "threads")}})
    rows = rows.drop(columns=["device"], errors="ignore")
    names = list(cfg.search_space.names)
    rows = rows[[*names, SEED, EPOCH, *[c for c in rows if c not in (*names, SEED, EPOCH)]]]
    return write_table(rows.sort_values([*names, SEED, EPOCH]).reset_index(drop=True), meta,
                       table_path(cfg, backbone))


def _fingerprint(cfg: ExperimentConfig, points: list[dict[str, Any]]) -> dict[str, Any]:
    """What `design.json` stores: the curves a record (and its resume) trains."""
    return {"points": points, "seeds": list(cfg.seeds), "epochs": cfg.budget.epochs,
            "backbones": list(cfg.backbones)}


def check_design(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The design, checked against the one an earlier (interrupted) record stored: a resume
    must record the same curves."""
    points = design(cfg)
    stored = cfg.experiment_dir / DESIGN_FILE
    if stored.is_file():
        if json.loads(stored.read_text()) != json.loads(json.dumps(_fingerprint(cfg, points))):
            raise ConfigError(f"name: {str(cfg.experiment_dir)!r} holds a record of another "
                              "design; choose another name or storage to record this one")
    return points


def run_record(cfg: ExperimentConfig, log: Any = print) -> list[Path]:
    """Record every backbone of `cfg` in the connected Ray cluster."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # less to redo after a crash
    points = check_design(cfg)
    cfg.experiment_dir.mkdir(parents=True, exist_ok=True)
    (cfg.experiment_dir / DESIGN_FILE).write_text(json.dumps(_fingerprint(cfg, points),
                                                             indent=1))
    log(f"recording {len(points)} configurations x {len(cfg.seeds)} seeds x "
        f"{cfg.budget.epochs} epochs on {', '.join(cfg.backbones)}")
    return [record_backbone(cfg, b, points, log) for b in cfg.backbones]
