"""Runs experiments: one cell per (searcher, backbone, seed), all under one storage path,
several at once in the same Ray cluster, each with the same budget.

Tune drivers run in Ray tasks (no CPUs of their own, pinned to the node of the storage
path) so several searchers share the cluster's trial slots side by side; each cell caps its
concurrent trials, so none starves the others. The cells of searchers (with or without a
Tune scheduler) share one Tune driver (service.backends.tune.shared), whose trial actors serve cell
after cell; a cell whose plan is a population or an in-trial controller is a Tune experiment of
its own.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from service.backends import plans
from service.core.api import ControllerPlan, PopulationPlan, SearcherPlan
from service.core.config import ExperimentConfig
from service.core.layout import (
    CONFIG_FILE,
    FINAL_TEST_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    Cell,
    write_json,
)

__all__ = ["CONFIG_FILE", "FINAL_TEST_FILE", "SUMMARY_FILE", "Cell", "build_tuner", "run_all",
           "run_cell"]


class ExperimentExists(RuntimeError):
    """The storage path already holds experiments of this name."""


def cells(cfg: ExperimentConfig) -> list[Cell]:
    return [Cell(s, b, seed) for s in cfg.searchers for b in cfg.backbones for seed in cfg.seeds]


def check_fresh(cfg: ExperimentConfig) -> None:
    """Refuse to write into an experiment folder that already has results."""
    folder = cfg.experiment_dir
    if folder.exists() and any(folder.iterdir()):
        raise ExperimentExists(
            f"name: {str(folder)!r} already holds results; choose another name or storage "
            f"(or delete the folder)"
        )


class EpochBudgetStopper:
    """Ends a multi-fidelity experiment once its trials have trained `budget` epochs in all,
    so HyperBand, ASHA and BOHB get the same total epochs as full-length searchers."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.epochs: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.epochs[trial_id] = int(result.get("training_iteration", 0))
        return False

    def stop_all(self) -> bool:
        return sum(self.epochs.values()) >= self.budget


def _as_stopper(budget: int) -> Any:
    from ray.tune import Stopper

    class _Stopper(EpochBudgetStopper, Stopper):
        pass

    return _Stopper(budget)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def search_alg(plan: Any, cfg: ExperimentConfig, cell: Cell) -> tuple[Any, str | None]:
    """Tune's search algorithm for a plan, and the controller's actor name for trials."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from service.backends.tune.searching import ControllerHost

    if isinstance(plan, SearcherPlan):
        return plan.searcher, None
    if isinstance(plan, PopulationPlan):
        return BasicVariantGenerator(points_to_evaluate=plan.initial_configs,
                                     random_state=cell.seed), None
    if isinstance(plan, ControllerPlan):
        host = ControllerHost(plan, cfg.search_space, metric=plan.metric, mode=plan.mode)
        return host, host.name
    raise TypeError(f"{cell.searcher}: unknown plan kind {type(plan).__name__}")


def build_tuner(cfg: ExperimentConfig, cell: Cell, trainable: Any = None,
                warm_pool: str | None = None) -> Any:
    """The Tuner of one cell: the registry's plan, the trainable with its resources, and the
    run settings that make it resumable (checkpoints, failure retries). `trainable`
    replaces the real one (tests drive the registry with a cheap objective); `warm_pool`
    names the run's pool of warm trial processes (service.backends.tune.warm)."""
    from ray import tune

    from service.backends.tune.warm import train_trial

    plan, algorithm, run = cell_plan(cfg, cell, warm_pool=warm_pool)
    resources = {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    stopper = _as_stopper(plan.epoch_budget) if plan.multi_fidelity else None
    return tune.Tuner(
        tune.with_resources(trainable or train_trial, resources),
        param_space={**plan.param_space, "run": run.as_dict()},
        tune_config=tune.TuneConfig(
            search_alg=algorithm,
            scheduler=plan.scheduler,
            num_samples=plan.num_samples,
            max_concurrent_trials=plan.concurrency(cfg.concurrency),
            reuse_actors=cfg.reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=cell.name,
            storage_path=str(cfg.experiment_dir),
            stop=stopper,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[hparams_logger(), *journal_logger(cfg), *mlflow_logger(cfg),
                       race_metrics(cfg)],
            verbose=0,
        ),
    )


def cell_plan(cfg: ExperimentConfig, cell: Cell, warm_pool: str | None = None
              ) -> tuple[Any, Any, Any]:
    """A cell's plan from the registry, its Tune search algorithm, and the run settings
    every one of its trials carries."""
    from service.backends.tune.trainable import RunSettings

    plan = plans.build(
        cell.searcher, space=cfg.search_space, metric=cfg.metric, mode=cfg.mode,
        seed=cell.seed, budget=cfg.budget, options=cfg.searcher_options.get(cell.searcher),
        objectives=cfg.objectives_spec,
    )
    algorithm, controller = search_alg(plan, cfg, cell)
    dataset = cfg.dataset.model_dump(exclude_none=True)
    weights = cfg.weights.get(cell.backbone)
    run = RunSettings(backbone=cell.backbone, epochs=plan.max_epochs, seed=cell.seed,
                      dataset=dataset, threads=max(1, int(cfg.resources.cpus)),
                      controller=controller,
                      controller_every=getattr(plan, "step_epochs", 1),
                      patience=plan.patience, metric=cfg.metric, mode=cfg.mode,
                      weights=str(Path(weights).expanduser().resolve()) if weights else None,
                      termination=cfg.termination, reward=cfg.reward,
                      searcher=cell.searcher, perf=cfg.perf,
                      objectives=cfg.objectives_spec.as_dict() if cfg.objectives else None,
                      warm_pool=warm_pool if not cfg.resources.gpus else None)
    return plan, algorithm, run


HPARAMS_RUN_KEYS = ("searcher", "backbone", "seed")
"""What TensorBoard's HParams view gets beside a trial's searched hyperparameters."""


def hparams_logger() -> Any:
    """Tune's TensorBoard logger, whose HParams entry (written when a trial ends) also names
    the trial's searcher, backbone and seed, so `tensorboard --logdir <experiment>` compares
    the searchers' trials side by side (Tune's own logs only the searched values)."""
    from ray.tune.logger import TBXLoggerCallback

    class HParamsLogger(TBXLoggerCallback):
        def _try_log_hparams(self, trial: Any, result: dict) -> None:
            run = (trial.config or {}).get("run") or {}
            searched = trial.evaluated_params
            trial.evaluated_params = {**searched, **{k: run[k] for k in HPARAMS_RUN_KEYS
                                                     if run.get(k) not in (None, "")}}
            try:
                super()._try_log_hparams(trial, result)
            finally:
                trial.evaluated_params = searched

    return HParamsLogger()


def journal_logger(cfg: ExperimentConfig) -> list[Any]:
    """The callback that streams the trials into `<experiment>/optuna.journal` for
    optuna-dashboard (service.backends.tune.journal), or none with `dashboard: false`."""
    if not cfg.dashboard:
        return []
    from service.backends.tune.journal import JournalCallback

    return [JournalCallback(str(cfg.experiment_dir), cfg.space, cfg.metric, cfg.mode)]


def race_metrics(cfg: ExperimentConfig) -> Any:
    """The callback that exports the searchers' race as Ray metrics (the Ray dashboard's
    Metrics view, Prometheus): service.backends.tune.race."""
    from service.backends.tune.race import RaceMetrics

    return RaceMetrics(cfg.name, cfg.metric, cfg.mode)


MLFLOW_DB = "mlflow.db"
"""Per experiment folder with `mlflow: true`: MLflow's tracking database."""


def mlflow_uri(cfg: ExperimentConfig) -> str:
    """Where MLflow logs: MLFLOW_TRACKING_URI, else a SQLite file in the experiment folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cfg.experiment_dir / MLFLOW_DB}"


def prepare_mlflow(cfg: ExperimentConfig) -> None:
    """Create MLflow's database and experiment once, before the Tune drivers start: two
    drivers creating them at once would race."""
    if not cfg.mlflow:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg))
    if client.get_experiment_by_name(cfg.name) is None:  # artifacts beside the database
        client.create_experiment(cfg.name, artifact_location=(
            cfg.experiment_dir / "mlartifacts").as_uri())


def mlflow_logger(cfg: ExperimentConfig) -> list[Any]:
    """Ray Tune's MLflowLoggerCallback (`mlflow: true`), whose run of each trial is also
    tagged with the trial's searcher, backbone and seed (Tune's own tags are the same for
    every trial: a shared driver runs several cells)."""
    if not cfg.mlflow:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TaggedMLflowLogger(MLflowLoggerCallback):
        def log_trial_start(self, trial: Any) -> None:
            run = (trial.config or {}).get("run") or {}
            common = self.tags
            self.tags = {**common, **{k: str(run[k]) for k in HPARAMS_RUN_KEYS
                                      if run.get(k) not in (None, "")}}
            try:
                super().log_trial_start(trial)
            finally:
                self.tags = common

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            # Tune also ends trials that never started (pending ones it stops), for which
            # Ray's logger has no run: its KeyError would break Tune's stop of the trial.
            if trial in self._trial_runs:
                super().log_trial_end(trial, failed=failed)

    return [TaggedMLflowLogger(tracking_uri=mlflow_uri(cfg), experiment_name=cfg.name)]


def best_trial(results: Any, metric: str, mode: str) -> dict[str, Any] | None:
    """The best finite result over all epochs of all trials: its trial's config, the
    schedule through that epoch (the hyperparameters in force per epoch), its value."""
    import math

    best: dict[str, Any] | None = None
    sign = 1.0 if mode == "max" else -1.0
    for result in results:
        df = result.metrics_dataframe
        if df is None or metric not in df or result.config is None:
            continue
        values = df[metric].astype(float)
        finite = values[values.map(math.isfinite)]
        if finite.empty:
            continue
        index = (finite * sign).idxmax()
        value = float(finite[index])
        if best is None or sign * value > sign * best["value"]:
            schedule = df["schedule"][index] if "schedule" in df else None
            init_seed = df["init_seed"][index] if "init_seed" in df else None
            best = {"config": result.config, "value": value,
                    "schedule": schedule if isinstance(schedule, str) else None,
                    "init_seed": None if init_seed is None or init_seed != init_seed
                    else int(init_seed),
                    # what `trained_weights` needs: the row of the best epoch, the trial's
                    # last row and its latest checkpoint
                    "row": df.loc[index].to_dict(), "last": df.iloc[-1].to_dict(),
                    "checkpoint": result.checkpoint}
    return best


def trained_weights(best: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The best trial's own final checkpoint and last row when they are the network the
    final test would retrain, else None. The retraining is seeded like the trial (same
    initial weights, batches and augmentation), so on the CPU it reproduces the trial bit
    for bit; retraining it again is time that goes into no new result (issue: time goes
    into training). Reused when the trial trained the run's full epochs from its own
    initial weights without diverging, ending or restarting, and (controllers) its best
    epoch was its last; never for a population, whose members inherit other members'
    weights."""
    from service.backends.tune.trainable import load_state, split_config

    last, checkpoint = best.get("last") or {}, best.get("checkpoint")
    if kind == "population" or checkpoint is None or not last:
        return None
    run, _ = split_config(best["config"])
    epoch = int(last.get("epoch", -1))
    if (epoch != run.epochs or bool(last.get("diverged")) or last.get("terminated")
            or int(last.get("restarts", 0) or 0) or last.get("init_seed") != best["init_seed"]):
        return None
    if kind == "controller" and int(best["row"].get("epoch", -1)) != epoch:
        return None  # the test retrains the schedule through the best epoch only
    with checkpoint.as_directory() as folder:
        state = load_state(folder)
    if int(state.get("epoch", -1)) != epoch:
        return None
    return {"checkpoint": state, "row": {k: last.get(k) for k in (
        "val_acc", "train_acc", "train_ms_per_batch")}}


ORPHANS = ".orphaned"


def known_trial_ids(folder: Path) -> set[str] | None:
    """Trial ids in the newest experiment snapshot Tune wrote in `folder` (None if none)."""
    snapshots = sorted(folder.glob("experiment_state-*.json"))
    if not snapshots:
        return None
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(trial_json)["trial_id"] for trial_json, _ in state["trial_data"]}


def set_aside_orphans(folder: Path, snapshots: Path | None = None) -> list[str]:
    """Move trial folders that Tune's last snapshot does not know (trials started after it,
    before a crash) into `.orphaned/`: Tune will not resume them, and a report that counted
    them would show a trial twice. Kept, not deleted. `snapshots`: where the snapshot is
    when it is not in `folder` (a shared driver's, service.backends.tune.shared)."""
    known = known_trial_ids(snapshots or folder)
    if known is None:
        return []
    moved = []
    for trial_dir in sorted(folder.glob("trial_*")):
        if trial_dir.is_dir() and trial_dir.name[len("trial_"):] not in known:
            target = folder / ORPHANS / trial_dir.name
            target.parent.mkdir(exist_ok=True)
            trial_dir.rename(target)
            moved.append(trial_dir.name)
    return moved


def run_cell(cfg_dict: dict[str, Any], cell: Cell, *, restore: bool = False,
             log_file: str | None = None, warm_pool: str | None = None) -> dict[str, Any]:
    """Run (or resume) one cell's Tune experiment, then its final test; write a summary.
    On resume a cell that wrote its summary is done and is not run again. With `log_file`
    this process's output (Tune, the searcher's libraries) goes to that file, not the
    console; `warm_pool` names the run's warm trial processes."""
    from service.core.progress import output_to

    with output_to(log_file):
        return _run_cell(cfg_dict, cell, restore=restore, warm_pool=warm_pool)


def driver_environment() -> None:
    """Settings of a process that runs a Tune driver (a cell's or a shared one)."""
    # Keep its console output to our own progress lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Snapshot the experiment (trials + searcher state) every 2 s instead of Tune's 10 s:
    # after a crash, less work is redone and fewer trials are left outside the snapshot.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")


def _run_cell(cfg_dict: dict[str, Any], cell: Cell, *, restore: bool,
              warm_pool: str | None = None) -> dict[str, Any]:
    from ray import tune

    from service.backends.tune.warm import train_trial
    from service.core.config import build_config

    driver_environment()
    cfg = build_config(cfg_dict)
    folder = cfg.experiment_dir / cell.name
    start = time.time()
    if restore and (folder / SUMMARY_FILE).exists():
        return {**json.loads((folder / SUMMARY_FILE).read_text()), "resumed": "already done"}
    if restore and tune.Tuner.can_restore(str(folder)):
        set_aside_orphans(folder)
        resources = {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
        tuner = tune.Tuner.restore(str(folder), tune.with_resources(train_trial, resources),
                                   resume_errored=True)
    else:
        tuner = build_tuner(cfg, cell, warm_pool=warm_pool)
    fit_start, cpu_start = time.time(), time.process_time()
    results = tuner.fit()
    fit_end = time.time()
    print(f"{cell.name}: {fit_end - fit_start:.1f} s, "
          f"{time.process_time() - cpu_start:.1f} s of this driver's CPU", flush=True)
    return finish_cell(cfg, cell, list(results), started=start, fit_started=fit_start,
                       fit_ended=fit_end)


def finish_cell(cfg: ExperimentConfig, cell: Cell, results: list[Any], *, started: float,
                fit_started: float, fit_ended: float, shared: bool = False) -> dict[str, Any]:
    """A cell whose trials have ended: its best trial's final test (final_test.json) and
    its summary (summary.json), written into its folder and returned. `shared`: the cell
    ran in a shared Tune driver (service.backends.tune.shared)."""
    import ray

    from service.backends.tune.trainable import final_test

    folder = cfg.experiment_dir / cell.name
    summary: dict[str, Any] = {
        "searcher": cell.searcher, "backbone": cell.backbone, "seed": cell.seed,
        "trials": len(results), "errors": sum(r.error is not None for r in results),
        "wall_time_s": fit_ended - started,
        # service.reports.overhead: the cell's own phases on the wall clock
        "started_unix": started, "fit_started_unix": fit_started, "fit_ended_unix": fit_ended,
    }
    if shared:
        summary["shared_driver"] = True
    best = best_trial(results, cfg.metric, cfg.mode)
    if cfg.final_test and best is not None:
        from service.core import registry

        # In-trial methods (controllers, PBT, PB2) change hyperparameters inside a trial:
        # the test retrains the schedule that produced the best result, not one config.
        entry = registry.entry(cell.searcher)
        schedule = best["schedule"] if entry.replays_schedule else None
        tested = time.time()
        summary["final_test_started_unix"] = tested
        state = trained_weights(best, entry.kind) if cfg.final_test_reuse else None
        args = (best["config"], schedule, best["init_seed"], state)
        if cfg.resources.gpus:  # a GPU is Ray's to assign: a task of its own
            test = ray.get(ray.remote(num_cpus=cfg.resources.cpus, num_gpus=cfg.resources.gpus)(
                final_test).remote(*args))
            summary["final_test_s"] = time.time() - tested
        elif shared and state is not None:
            # Scoring the trial's own weights on the test split takes a fraction of a
            # second. A shared driver's trial actors keep their slots from trial to trial,
            # so a reservation would wait for its last trial: not reserved.
            test = final_test(*args)
            summary["final_test_s"] = time.time() - tested
        else:  # here, where torch and the data are loaded already, on a reserved slot
            test, waited = run_reserved({"CPU": cfg.resources.cpus}, final_test, *args)
            # service.reports.overhead: the slot's time, and the wait for a free slot
            summary["final_test_s"] = time.time() - tested - waited
            summary["final_test_wait_s"] = waited
        test["config"] = {k: v for k, v in best["config"].items() if k != "run"}
        if schedule is not None:
            test["schedule"] = json.loads(schedule)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / FINAL_TEST_FILE, test, indent=1, default=str)
        summary["test_acc"] = test["test_acc"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SUMMARY_FILE, summary, indent=1)
    return summary


def run_reserved(bundle: dict[str, float], fn: Any, *args: Any) -> tuple[Any, float]:
    """`fn(*args)` in this process once `bundle` is reserved for it on this node (a placement
    group pinned by node id), so Ray schedules no trial onto those CPUs meanwhile; returns
    its result and the seconds spent waiting for the reservation. A cell's driver runs its
    final test this way: in a fresh worker the test paid seconds of process start, imports
    and data loading for a second or two of training (issue: time goes into training); here
    they are already done. The reservation is released afterwards."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    node = ray.get_runtime_context().get_node_id()
    group = placement_group([bundle], strategy="STRICT_PACK",
                            bundle_label_selector=[{"ray.io/node-id": node}])
    asked = time.time()
    try:
        ray.get(group.ready())
        waited = time.time() - asked
        return fn(*args), waited
    finally:
        remove_placement_group(group)


def run_all(cfg: ExperimentConfig, *, restore: bool = False, log: Any = None,
            quiet: bool = True, refresher: ReportRefresher | None = None,
            ) -> list[dict[str, Any]]:
    """Run every cell of `cfg` in the connected Ray cluster, at most
    `max_parallel_experiments` at once, and return their summaries. `refresher` rewrites
    the live report meanwhile (default: every REPORT_EVERY_S and as experiments end)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = cfg.experiment_dir
    folder.mkdir(parents=True, exist_ok=True)
    stored = {**cfg.model_dump(), "storage": str(Path(cfg.storage).expanduser().resolve())}
    write_json(folder / CONFIG_FILE, stored, indent=1)
    prepare_mlflow(cfg)
    here = ray.get_runtime_context().get_node_id()
    pinned = NodeAffinitySchedulingStrategy(here, soft=False)
    task = ray.remote(num_cpus=0, max_retries=0)(run_cell).options(scheduling_strategy=pinned)
    todo = cells(cfg)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.resources.cpus))
    # As many experiments as slots. One more (its driver started while the others train)
    # measured no faster on cpu-small (246 s against 252 s): Tune starts a trial's actor
    # only once the trial holds its slot, and that start is most of an experiment's.
    parallel = cfg.max_parallel_experiments or min(len(todo), slots)
    run_started = time.time()
    cfg_dict = cfg.model_dump()
    # the warm processes of the trials that start first, started now: they warm up while
    # the drivers start, instead of after the first trials asked for them (on cpu-small
    # the first trial began 7 s after the driver's start)
    warm = _warm_pool(cfg, prestart=min(slots, parallel * cfg.concurrency))
    # The cells of searchers share one Tune driver (service.backends.tune.shared), first; each other
    # cell (populations, controllers) is an experiment of its own.
    shared = shared_cells(cfg, todo)
    queue: list[list[Cell]] = ([shared] if shared else []) + [[c] for c in todo
                                                             if c not in shared]
    running: dict[Any, list[Cell]] = {}
    summaries: list[dict[str, Any]] = []
    announced: set[str] = set()  # shared cells whose end was logged
    from service.backends.tune.shared import open_cells, run_shared
    from service.core.progress import LOG_DIR, Progress

    progress = Progress(folder, todo, metric=cfg.metric, mode=cfg.mode,
                        epochs_per_cell=cfg.budget.epoch_budget)
    log = log or progress.log
    refresher = refresher or ReportRefresher(folder)

    def load() -> int:
        """Trial slots the running experiments may use: a shared driver all `parallel`
        until its last cell opened, then as many as it has cells open."""
        return sum(open_cells(folder, parallel) if len(group) > 1 else 1
                   for group in running.values())

    try:
        while queue or running:
            # New experiments go out first: nothing else (a report, a log line) keeps a
            # trial slot idle.
            while queue and (not running or load() + min(len(queue[0]), parallel)
                             <= parallel):
                group = queue.pop(0)
                name = group[0].name if len(group) == 1 else "shared"
                log_file = str(folder / LOG_DIR / f"{name}.log") if quiet else None
                pool = warm[0] if warm else None
                if len(group) == 1:
                    ref = task.remote(cfg_dict, group[0], restore=restore, log_file=log_file,
                                      warm_pool=pool)
                else:
                    ref = ray.remote(num_cpus=0, max_retries=0)(run_shared).options(
                        scheduling_strategy=pinned).remote(
                        cfg_dict, group, parallel=parallel, restore=restore,
                        log_file=log_file, warm_pool=pool)
                running[ref] = group
                log(f"started {name}" + (f" ({len(group)} cells in one Tune driver)"
                                         if len(group) > 1 else "")
                    + (f" (its log: {log_file})" if log_file else ""))
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            if done:
                group = running.pop(done[0])
                try:
                    result = ray.get(done[0])
                    ended = result if len(group) > 1 else [result]
                except Exception as err:  # one broken experiment must not lose the others
                    ended = [{"searcher": cell.searcher, "backbone": cell.backbone,
                              "seed": cell.seed,
                              "failed": f"{type(err).__name__}: {err}"[:500]}
                             for cell in group]
                for cell, summary in zip(group, ended, strict=True):
                    summaries.append(summary)
                    if cell.name not in announced:
                        log(_finished_line(cell, summary))
                if running or queue:
                    refresher.request()  # an experiment ended: show it
            # A shared driver's cells end one by one, each with its summary: show them.
            for group in running.values():
                for cell in group if len(group) > 1 else []:
                    path = folder / cell.name / SUMMARY_FILE
                    if cell.name not in announced and path.exists():
                        announced.add(cell.name)
                        try:
                            log(_finished_line(cell, json.loads(path.read_text())))
                        except ValueError:  # being written: shown at the group's end
                            announced.discard(cell.name)
                            continue
                        refresher.request()
            progress.update(force=bool(done))
            refresher.tick()
    finally:
        refresher.close()
        if warm:
            from service.backends.tune.warm import stop_pool

            stop_pool(warm[1])
    progress.close()
    write_json(folder / RUN_FILE, {
        "started_unix": run_started, "ended_unix": time.time(), "slots": slots,
        "cells": len(summaries), "restore": restore, "report_refreshes": refresher.written,
        "report_refresh_cpu_s": round(refresher.cpu_s, 3)}, indent=1)
    return summaries


def _finished_line(cell: Cell, summary: dict[str, Any]) -> str:
    return f"finished {cell.name}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if k not in ("searcher", "backbone", "seed") and not k.endswith("_unix"))


def shared_cells(cfg: ExperimentConfig, todo: list[Cell]) -> list[Cell]:
    """The cells that share one Tune driver (service.backends.tune.shared): those of searchers,
    with or without a Tune scheduler (no population, no in-trial controller), when there are two
    or more and `shared_driver` is on."""
    from service.core import registry

    if not cfg.shared_driver:
        return []
    shared = [c for c in todo if registry.entry(c.searcher).shares_driver]
    return shared if len(shared) > 1 else []


def _warm_pool(cfg: ExperimentConfig, prestart: int = 0) -> tuple[str, Any] | None:
    """The run's pool of warm trial processes (service.backends.tune.warm), `prestart` of them
    started now on this node: its name and handle; None for GPU trials or `warm_pool: false`."""
    if not cfg.warm_pool or cfg.resources.gpus:
        return None
    from service.backends.tune.warm import pool_name, start_pool

    name = pool_name(cfg.experiment_dir)
    return name, start_pool(name, cfg.resources.cpus, prestart=prestart)


REPORT_EVERY_S = 60.0
"""While a run goes on, its report (index.html, tables and plots but the paper's figures) is
rewritten this often, and when an experiment ends (at most every REPORT_GAP_S), so a browser
on the folder shows the comparison so far."""
REPORT_GAP_S = 30.0
"""At least this long between two refreshes' starts (after the first): a refresh costs
seconds of CPU, which on a small machine the trials would otherwise have had."""
REPORT_CPU_SHARE = 0.05
"""And at least the last refresh's CPU time / this: refreshes take at most 5% of one core
(Tune's rule for its automatic experiment snapshots: the period is 19x a snapshot's time).
A live refresh of cpu-small's 24 cells took 3-5 s of CPU, so one comes every 60-100 s
rather than every 30 (issue: time goes into training)."""


class ReportRefresher:
    """Rewrites a running experiment's report in a background thread at low CPU priority
    (nice 10 on Linux), one refresh at a time, so neither the run loop nor the trials wait
    for it: every `every_s`, and soon after `request` (an experiment ended) but not sooner
    than `gap_s` after the last refresh that wrote a report began, nor sooner than its CPU
    time / `cpu_share` (`cpu_clock`: the refreshing thread's CPU seconds). A report that
    cannot be written yet (no results) is no error; the final report is the caller's.
    `writer(folder)` writes the report: the reports sit above this backend, so the CLI
    passes it in; without one nothing is refreshed."""

    def __init__(self, folder: Path, every_s: float = REPORT_EVERY_S,
                 gap_s: float = REPORT_GAP_S, clock: Any = time.time,
                 writer: Any = None, cpu_share: float = REPORT_CPU_SHARE,
                 cpu_clock: Any = time.thread_time) -> None:
        self.folder, self.every_s, self.gap_s, self.clock = folder, every_s, gap_s, clock
        self.writer = writer
        self.cpu_share, self.cpu_clock = cpu_share, cpu_clock
        self.started = -math.inf  # when the last refresh began
        self.spacing = 0.0  # the last written refresh's CPU seconds / cpu_share
        self.due = clock() + every_s
        self.written = 0  # refreshes that wrote a report
        self.cpu_s = 0.0  # CPU seconds of every refresh, written or not
        self.last_error: str | None = None  # why the last refresh wrote nothing
        self._thread: Any = None

    def request(self) -> None:
        """Refresh as soon as the gap since the last refresh allows."""
        self.due = min(self.due, self.started + self.gap_s)

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self) -> bool:
        """Start a refresh if one is due and none is running; whether one started."""
        now = self.clock()
        if self.writer is None or now < self.due or now < self.started + self.spacing or self.busy:
            return False
        import threading

        self.started, self.due = now, now + self.every_s
        self._thread = threading.Thread(target=self._refresh, name="report-refresh",
                                        daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        import threading

        try:  # this thread only (Linux: a thread is a schedulable task with its own nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        began = self.cpu_clock()
        try:
            self.writer(self.folder)
            self.written += 1
            self.last_error = None
            self.spacing = (self.cpu_clock() - began) / self.cpu_share
        except Exception as err:  # noqa: BLE001 - partial results; the final report follows
            self.last_error = f"{type(err).__name__}: {err}"[:500]
            self.started = -math.inf  # nothing written: the next request need not wait
        finally:
            self.cpu_s += self.cpu_clock() - began

    def close(self) -> None:
        """Wait for a refresh in progress (the caller writes the final report next)."""
        if self._thread is not None:
            self._thread.join()


def stored_config(folder: Path) -> dict[str, Any]:
    """The validated config an experiment folder was started with."""
    return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8-sig"))
