"""The Tune trainable: each trial (a Ray worker actor, reused across trials) trains one
backbone with the trial's hyperparameters on the device Ray assigned, reports every epoch
and checkpoints every epoch, so schedulers can pause, resume and clone trials.

A trial config holds the hyperparameters (see service.core.space) plus `run`, the constants of
the experiment (`RunSettings`). An optional controller (service.backends.tune.searching's host) may
change the hyperparameters every `controller_every` epochs inside the running trial (EMERALD-O's
episodic schedule, seed 004's per-epoch optimizer choice). Every row carries the trial's
schedule so far, and the checkpoint carries it too, so a PBT clone inherits its donor's;
`final_test` replays a schedule epoch by epoch.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from service.core.api import (
    Observation,
    Schedule,
    Strict,
    eq2_reward,
    hp_columns,
    plateaued,
    trial_budget,
)
from service.core.config import PerfConfig, RewardConfig, TerminationConfig
from service.core.objectives import Objectives, with_objective
from service.core.space import HPARAMS, layer_values, resolve_config
from service.training.data import Splits, load_splits
from service.training.trainer import EpochCancelled, HParams, Perf, Trainer

CHECKPOINT_FILE = "trial_state.pt"
CHECKPOINT_PREFIX = "emerald-checkpoint-"
# emerald-checkpoint-<pid>@<host tag>-<random>: whose folder it is, on which machine
_CHECKPOINT_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)@([0-9a-f]{8})-")


@functools.cache
def _host_tag() -> str:
    """This machine's tag in checkpoint folder names: a folder of another machine or
    container sharing the temp folder is never taken for one of a dead local process."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (os.kill: psutil is no declared dependency; Ray only
    vendors a copy of its own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_checkpoint_folders(root: str | Path | None = None) -> list[str]:
    """Remove the epoch checkpoint folders (`EpochFeed`) that processes of this machine
    left when they died without removing them (SIGKILL, the out-of-memory killer, a node
    stopped mid-trial): Tune had copied each into its storage, or never would. Folders
    of live processes, of other machines, or without an owner in their name stay. Returns
    the folders removed."""
    host, removed = _host_tag(), []
    for path in Path(root or tempfile.gettempdir()).glob(CHECKPOINT_PREFIX + "*"):
        owner = _CHECKPOINT_NAME.match(path.name)
        if owner and owner[2] == host and not _alive(int(owner[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


class RunSettings(Strict):
    """Experiment constants every trial of one Tune experiment shares. Its parts that the
    config defines are the config's own models (`termination`, `reward`, `perf`: their fields,
    defaults and checks), not copies; the rest is what the experiment decided for the cell.
    Travels in each trial config as a plain dict (`as_dict`) and is validated again there."""

    backbone: str
    epochs: int
    seed: int = 0
    dataset: dict[str, Any] = {"name": "digits"}
    threads: int = 1
    controller: str | None = None
    controller_every: int = 1
    weights: str | None = None
    test_last: bool = False
    """Score the test split after the last epoch (`record`: the table's test accuracy)."""
    patience: int = 0
    """End the trial once `metric` has not improved for this many epochs (0: never)."""
    metric: str = "val_acc"
    mode: str = "max"
    termination: TerminationConfig = TerminationConfig()
    """Iranfar et al. V-E's early termination (the config's `termination`)."""
    reward: RewardConfig | None = None
    """With a value, every row carries `reward`, Iranfar et al. eq. 2 (the config's `reward`)."""
    searcher: str = ""
    """The searcher (as the config spells it) that chose this trial: TensorBoard's HParams
    view shows it beside the searched values (`service.backends.tune.experiment.hparams_logger`)."""
    perf: PerfConfig = PerfConfig()
    """How the trial runs on its device (the config's `perf`)."""
    warm_pool: str | None = None
    """The run's pool of warm trial processes (`service.backends.tune.warm`), if it has one."""
    objectives: dict[str, Any] | None = None
    """The experiment's objectives (`service.core.objectives.Objectives.as_dict`): with a
    value, every row carries the scalarised `objective`."""

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> RunSettings:
        """These settings with `changes`, validated again."""
        return RunSettings(**{**self.as_dict(), **changes})


def assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned to this worker (logical ones included)."""
    import ray

    # Outside Ray (unit tests, a plain driver) there is no assignment; asking would start Ray.
    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


def node_id() -> str:
    """The Ray node this trial runs on (several nodes may share one IP address)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def pick_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    if assigned_gpus() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def load_data(run: RunSettings) -> Splits:
    """The trial's data splits; cached per worker process, so reused actors load once."""
    ds = dict(run.dataset)
    name = ds.pop("name")
    return load_splits(name, seed=run.seed, **ds)


def split_config(config: dict[str, Any]) -> tuple[RunSettings, dict[str, Any]]:
    """Separate experiment constants from the (resolved) hyperparameters."""
    raw = {k: v for k, v in config.items() if k != "run"}
    run = RunSettings(**config["run"])
    hp = resolve_config(raw)
    backbone = run.backbone
    if "width" in raw:  # an architecture dimension chosen by the searcher
        name = backbone.split("@")[0]
        backbone = f"{name}@{float(hp['width']):g}"
    return run.replace(backbone=backbone), hp


def epoch_report(trainer: Trainer, metrics: Any, splits: Splits) -> dict[str, Any]:
    """The trainer's part of the per-epoch row (service.core.api.EPOCH_FIELDS). A diverged
    epoch is not evaluated: NaN metrics plus `diverged` are the failure marker the result
    guard turns into a failed trial, and the trial ends cleanly instead of erroring."""
    diverged = metrics.diverged
    val_acc, val_loss = ((float("nan"), float("nan")) if diverged
                         else trainer.evaluate(splits.val_x, splits.val_y))
    if not math.isfinite(val_loss):
        val_acc, diverged = float("nan"), True
    report = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "train_acc": metrics.train_acc,
        "train_loss": metrics.train_loss,
        "grad_norm": metrics.grad_norm,
        "grad_norm_std": metrics.grad_norm_std,
        "epoch_time_s": metrics.epoch_time_s,
        "images_per_s": metrics.images_per_s,
        "train_ms_per_batch": metrics.ms_per_batch,
        "model_size_mb": trainer.model_size_mb,
        "num_parameters": trainer.num_parameters,
        "epoch": trainer.epoch,
        "diverged": diverged,
        "device": str(trainer.device),
    }
    report.update(hp_columns(trainer.hp.as_dict()))
    return report


def row_reward(row: dict[str, Any], c_acc: float, size_ref_mb: float) -> float:
    """Iranfar et al. eq. 2 of one epoch row (`service.core.api.eq2_reward`): -1 when terminated
    or diverged, the size taken as model_size_mb / size_ref_mb."""
    acc = row.get("val_acc")
    return eq2_reward(math.nan if acc is None else float(acc),
                      float(row["model_size_mb"]) / size_ref_mb, c_acc,
                      terminated=bool(row.get("terminated") or row.get("diverged")))


class _Termination:
    """Iranfar et al. section V-E's two counters (Fig. 7): slow batches end the trial at
    once; training loss above the threshold for N consecutive epochs restarts it with a
    fresh initialisation, `restarts` times, and ends it the next time. Also notes the first
    epoch whose loss met the threshold (the episode length of section VI-A)."""

    def __init__(self, run: RunSettings, state: dict[str, Any] | None) -> None:
        self.run = run
        state = state or {}
        self.violations = int(state.get("loss_violations", 0))
        self.restarts = int(state.get("restarts", 0))
        self.met_epoch = int(state.get("loss_met_epoch", 0))

    def check(self, metrics: Any, epoch: int) -> str:
        """'' to go on, 'restart', or why the trial is terminated ('batch_time', 'loss')."""
        if metrics.slow_batches:
            return "batch_time"
        rule = self.run.termination
        if rule.loss <= 0:
            return ""
        if metrics.train_loss <= rule.loss:
            self.violations = 0
            self.met_epoch = self.met_epoch or epoch
            return ""
        self.violations += 1
        if self.violations < max(1, rule.loss_patience):
            return ""
        if self.restarts < rule.restarts:
            self.restarts += 1
            self.violations = 0
            return "restart"
        return "loss"

    def init_seed(self) -> int:
        """The initial weights' seed: the run's, a new one after each restart."""
        return self.run.seed + 1_000_003 * self.restarts

    def state(self) -> dict[str, Any]:
        return {"loss_violations": self.violations, "restarts": self.restarts,
                "loss_met_epoch": self.met_epoch}


def trial_epochs(run: RunSettings, hp_config: dict[str, Any]) -> int:
    """The trial's epoch budget (`trial_budget`, the rule the replay backend follows too)."""
    return trial_budget(run.epochs, hp_config)


def build_trainer(run: RunSettings, splits: Splits, hp: HParams, hp_config: dict[str, Any],
                  init_seed: int | None = None, cancel: threading.Event | None = None
                  ) -> Trainer:
    """The trial's trainer on the device Ray assigned, per-layer architecture included;
    `cancel` ends an epoch in flight (`Trainer.cancel`)."""
    trainer = Trainer.build(run.backbone, splits, hp, device=pick_device(), seed=run.seed,
                            weights=run.weights, layers=layer_values(hp_config),
                            init_seed=init_seed, perf=Perf(**run.perf.model_dump()))
    trainer.cancel = cancel
    return trainer


def train_loop(config: dict[str, Any], *, report: Callable[[dict, dict | None], None],
               state: dict[str, Any] | None = None, trial_id: str = "local") -> None:
    """One trial, with or without Tune: `report(row, checkpoint_state)` for each of
    `trial_steps`."""
    for row, checkpoint_state in trial_steps(config, state=state, trial_id=trial_id):
        report(row, checkpoint_state)


def trial_steps(config: dict[str, Any], *, state: dict[str, Any] | None = None,
                trial_id: str = "local", cancel: threading.Event | None = None,
                ) -> Iterator[tuple[dict[str, Any], dict | None]]:
    """One trial, epoch by epoch: build the trainer from `config` (resumed from a
    checkpoint `state`), train to the budget, ask the controller (if any) at every step
    boundary, and yield `(row, checkpoint_state)` after each epoch; the caller reports it
    before asking for the next (`EpochFeed`). A diverged or terminated epoch ends the
    trial, yielded once more without a checkpoint. `cancel` set: the epoch in flight ends
    at its next batch (EpochCancelled)."""
    entered = time.perf_counter()
    run, hp_config = split_config(config)
    torch.set_num_threads(max(1, run.threads))
    # where it trained: a warm process (service.backends.tune.warm) serves many trials
    placement = {"gpu_ids": ",".join(assigned_gpus()), "node_id": node_id(),
                 "pid": os.getpid()}
    splits = load_data(run)
    budget = trial_epochs(run, hp_config)
    objectives = Objectives.from_dict(run.objectives) if run.objectives else None
    guard = _Termination(run, state)
    trainer = build_trainer(run, splits, HParams.from_config(hp_config), hp_config,
                            guard.init_seed(), cancel)
    schedule, elapsed, history = Schedule(), 0.0, []
    if state is not None:
        trainer.load_state_dict(state)
        # A PBT clone inherits its donor's schedule with the donor's weights.
        schedule = Schedule.from_json(state["schedule"]) if "schedule" in state else schedule
        elapsed = float(state.get("elapsed_s", 0.0))
        history = [float(v) for v in state.get("history", [])]
    client = None
    if run.controller:  # ray.tune and pandas come with it: about 1 s of CPU per process
        from service.backends.tune.searching import ControllerClient

        client = ControllerClient(run.controller)
    began = time.perf_counter() - elapsed
    # Where the trial's time goes (service.reports.overhead): data and model before the
    # first epoch, each epoch's evaluation, and each checkpoint + report call.
    phases = {"setup_s": began + elapsed - entered, "report_s": 0.0}
    step: list[dict[str, Any]] = []  # rows since the controller last decided
    row: dict[str, Any] = {}
    while trainer.epoch < budget:
        wait = 0.0
        if client is not None and trainer.epoch % max(1, run.controller_every) == 0:
            obs = Observation(trial_id, trainer.epoch, budget, trainer.hp.as_dict(), step)
            changes, wait = client.decide(obs)
            step = []
            if changes:
                trainer.apply(trainer.hp.replace(changes))
        schedule.append(trainer.hp.as_dict())
        metrics = trainer.train_epoch(run.termination.batch_time_s,
                                      run.termination.batch_patience)
        if cancel is not None and cancel.is_set():  # nobody will read this epoch's scores
            raise EpochCancelled(f"epoch {trainer.epoch} cancelled before its evaluation")
        evaluated = time.perf_counter()
        row = epoch_report(trainer, metrics, splits)
        phases["eval_s"] = time.perf_counter() - evaluated
        init_seed = guard.init_seed()  # of the weights this epoch trained (before a restart)
        verdict = "" if row["diverged"] else guard.check(metrics, trainer.epoch)
        if run.test_last and trainer.epoch == budget and not row["diverged"] and not verdict:
            row["test_acc"], row["test_loss"] = trainer.evaluate(splits.test_x, splits.test_y)
        row.update(placement, controller_wait_s=wait, schedule=schedule.to_json(),
                   elapsed_s=time.perf_counter() - began, unix_time=time.time(),
                   terminated="" if verdict == "restart" else verdict,
                   **guard.state(), init_seed=init_seed, **phases)
        phases = {"setup_s": 0.0, "report_s": 0.0}  # setup once; report_s: the last call
        if run.reward is not None:
            row["reward"] = row_reward(row, run.reward.c_acc, run.reward.size_ref_mb)
        with_objective(row, objectives, run.seed, trial_id)
        step.append(row)
        if row["diverged"] or row["terminated"]:
            break
        if verdict == "restart":  # the same hyperparameters from fresh initial weights
            trainer = build_trainer(run, splits, trainer.hp, hp_config, guard.init_seed(),
                                    cancel)
            schedule, history = Schedule(), []
        else:
            history.append(float(row.get(run.metric, math.nan)))
        reporting = time.perf_counter()
        yield row, {**trainer.state_dict(), "schedule": schedule.to_json(),
                    "elapsed_s": row["elapsed_s"], "history": history, **guard.state()}
        phases["report_s"] = time.perf_counter() - reporting  # told with the next epoch
        if plateaued(history, run.patience, run.mode):
            break  # early stopping: the trial ends here, its controller is told below
    if client is not None:
        client.finish(Observation(trial_id, trainer.epoch, budget, trainer.hp.as_dict(),
                                  step))
    if row.get("diverged") or row.get("terminated"):
        yield row, None


class EpochFeed:
    """A trial's epochs (`trial_steps`) as `(row, checkpoint folder or None)`, for a caller
    that reports each to Tune before asking for the next (`train_trial`, a warm process).
    The folder is the feed's: removed at the next `next` or at `close`, or, if its
    process dies first, by the next feed made on the machine (`sweep_checkpoint_folders`).

    Ahead (`perf.report_ahead`, no in-trial controller): the epochs train in a thread, one
    ahead of the reports. Tune holds a function trainable at each report until its driver
    handled the result and asked for the next one (about 15 ms a report on 2 cores, more
    when the driver is busy); the next epoch trains meanwhile. An epoch's checkpoint is
    written before the next epoch touches the weights. `close` (Tune stopped or paused the
    trial at its last report) ends the epoch in flight at its next batch: only the work
    done meanwhile is lost. Otherwise each epoch trains inside `next`, as the loop did."""

    def __init__(self, config: dict[str, Any], *, state: dict[str, Any] | None = None,
                 trial_id: str = "local", ahead: bool | None = None) -> None:
        if ahead is None:
            run = RunSettings(**config["run"])
            ahead = run.perf.report_ahead and not run.controller
        self.ahead = ahead
        self.folder: str | None = None  # handed out last
        sweep_checkpoint_folders()  # what killed processes on this machine left
        self._cancel = threading.Event()
        self._steps = trial_steps(config, state=state, trial_id=trial_id,
                                  cancel=self._cancel if ahead else None)
        if ahead:
            self._slot: queue.Queue = queue.Queue(maxsize=1)
            self._taken = threading.Semaphore(0)
            self._thread = threading.Thread(target=self._produce, name="epoch-feed",
                                            daemon=True)
            self._thread.start()

    @staticmethod
    def _persist(row: dict[str, Any], state: dict | None) -> tuple[dict[str, Any], str | None]:
        if state is None:
            return row, None
        folder = tempfile.mkdtemp(prefix=f"{CHECKPOINT_PREFIX}{os.getpid()}@{_host_tag()}-")
        save_state(state, folder)
        return row, folder

    def _produce(self) -> None:
        try:
            for row, state in self._steps:
                self._slot.put(("epoch", self._persist(row, state)))
                self._taken.acquire()  # the caller took it: train the next meanwhile
                if self._cancel.is_set():
                    return
            self._slot.put(("end", None))
        except EpochCancelled:
            pass
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
            self._slot.put(("error", err))
        finally:
            self._steps.close()

    def __iter__(self) -> EpochFeed:
        return self

    def __next__(self) -> tuple[dict[str, Any], str | None]:
        self._remove_folder()
        if not self.ahead:
            row, folder = self._persist(*next(self._steps))
        else:
            kind, item = self._slot.get()
            if kind == "end":
                self._slot.put(("end", None))  # a later `next` ends too
                raise StopIteration
            if kind == "error":
                raise item
            self._taken.release()
            row, folder = item
        self.folder = folder
        return row, folder

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def close(self) -> None:
        """End the trial here: its loop (an epoch in flight at its next batch) and its
        folders."""
        if self.ahead:
            self._cancel.set()
            self._taken.release()
            self._thread.join()
            while not self._slot.empty():
                kind, item = self._slot.get_nowait()
                if kind == "epoch" and item[1] is not None:
                    shutil.rmtree(item[1], ignore_errors=True)
        else:
            self._steps.close()
        self._remove_folder()


def load_state(folder: str | Path) -> dict[str, Any]:
    """A trial checkpoint's state (the folder Tune restores)."""
    return torch.load(Path(folder) / CHECKPOINT_FILE, map_location=pick_device(),
                      weights_only=True)


def save_state(state: dict[str, Any], folder: str | Path) -> None:
    """Write a trial checkpoint's state into `folder` (Tune then persists the folder)."""
    torch.save(state, os.path.join(folder, CHECKPOINT_FILE))


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable, training in this process (see module docstring);
    `service.backends.tune.warm.train_trial` hands CPU trials to a warm process instead."""
    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(folder)

    feed = EpochFeed(config, state=state, trial_id=tune.get_context().get_trial_id()
                     or "local")
    try:
        for row, folder in feed:
            tune.report(row, checkpoint=None if folder is None
                        else tune.Checkpoint.from_directory(folder))
    finally:  # also when Tune stops the trial (SystemExit inside tune.report)
        feed.close()


def _fresh_trainer(run: RunSettings, hp_config: dict[str, Any], hp: dict[str, Any],
                   init_seed: int | None) -> tuple[Trainer, Splits]:
    """A trainer with `hp` in force, from the initial weights of `init_seed`, and its data,
    outside a trial (`replay`, `final_test`)."""
    torch.set_num_threads(max(1, run.threads))
    splits = load_data(run)
    return build_trainer(run, splits, HParams.from_config(hp), hp_config, init_seed), splits


def replay(config: dict[str, Any], schedule: Schedule | None = None,
           init_seed: int | None = None) -> Iterator[tuple[Trainer, dict[str, Any], Splits]]:
    """Train `config` from scratch, epoch by epoch: with `schedule`, its hyperparameters in
    force each epoch (as the trial that recorded it trained), else the config's for the
    trial's budget. `init_seed` gives the initial weights of a restarted trial. Yields the
    trainer, the epoch's row and the splits; stops after a diverged epoch."""
    run, hp_config = split_config(config)
    start = schedule.at(1) if schedule else hp_config
    if schedule:
        fixed = [k for k in start if k in HPARAMS and not HPARAMS[k].in_trial]
        for first, hp in schedule.runs[1:]:
            if changed := [k for k in fixed if hp.get(k) != start[k]]:
                raise ValueError(f"the schedule changes {changed[0]} at epoch {first}: the "
                                 "architecture is fixed for a trial's life")
    trainer, splits = _fresh_trainer(run, hp_config, start, init_seed)
    epochs = len(schedule) if schedule else trial_epochs(run, hp_config)
    while trainer.epoch < epochs:
        if schedule:
            trainer.apply(HParams.from_config(schedule.at(trainer.epoch + 1)))
        row = epoch_report(trainer, trainer.train_epoch(), splits)
        yield trainer, row, splits
        if row["diverged"]:
            return


def final_test(config: dict[str, Any], schedule: str | None = None,
               init_seed: int | None = None, state: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Train the chosen configuration (or replay the chosen trial's schedule, given as
    JSON) once more from scratch (from the trial's initial weights) and score it on the
    test split no searcher saw; also the timings of Iranfar et al. Table V. With `state`
    (service.backends.tune.experiment.trained_weights: the trial's own final checkpoint, which the
    retraining would reproduce, and its last row) those weights are scored instead."""
    plan = Schedule.from_json(schedule) if schedule else None
    # A trial's own shorter budget (Iranfar et al.'s short episodes) is a search economy:
    # the chosen network is trained for the run's epochs.
    config = {k: v for k, v in config.items() if k != "epochs"}
    if state is not None:
        run, hp_config = split_config(config)
        trainer, splits = _fresh_trainer(run, hp_config, hp_config, init_seed)
        trainer.load_state_dict(state["checkpoint"])
        row = {"diverged": False, **state["row"]}
    else:
        trainer, row, splits = list(replay(config, plan, init_seed))[-1]  # the last epoch
    if row["diverged"]:
        return {"test_acc": float("nan"), "test_loss": float("nan"), "diverged": True,
                "epochs": trainer.epoch}
    test = trainer.score(splits.test_x, splits.test_y)
    return {"test_acc": test.acc, "test_loss": test.loss, "retrain_val_acc": row["val_acc"],
            "diverged": False, "train_acc": row["train_acc"], "epochs": trainer.epoch,
            "model_size_mb": trainer.model_size_mb, "num_parameters": trainer.num_parameters,
            "train_ms_per_batch": row["train_ms_per_batch"],
            "infer_ms_per_batch": trainer.inference_ms_per_batch(splits.test_x),
            "retrained": state is None,
            **macro_scores(splits.test_y, test.predicted)}


def macro_scores(labels: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """Macro-averaged precision, recall and F1 over the classes in either tensor (document
    004 Table 2), as scikit-learn's `precision_recall_fscore_support(average="macro",
    zero_division=0)` computes them (tests compare the two): a class never predicted
    counts as precision 0. Counted here, so a final test does not import scikit-learn
    (about 1 s of CPU in the driver that runs it)."""
    y, p = labels.cpu().long().flatten(), predicted.cpu().long().flatten()
    if y.numel() == 0:
        return {"test_precision_macro": 0.0, "test_recall_macro": 0.0, "test_f1_macro": 0.0}
    n = int(max(int(y.max()), int(p.max()))) + 1
    tp = torch.bincount(y[y == p], minlength=n).double()
    true, pred = torch.bincount(y, minlength=n).double(), torch.bincount(p, minlength=n).double()
    present = (true + pred) > 0
    precision = tp / pred.clamp(min=1)
    recall = tp / true.clamp(min=1)
    f1 = 2 * tp / (true + pred).clamp(min=1)
    return {"test_precision_macro": float(precision[present].mean()),
            "test_recall_macro": float(recall[present].mean()),
            "test_f1_macro": float(f1[present].mean())}
