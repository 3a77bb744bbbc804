"""Warm trial processes: CPU trials train in long-lived processes, one per trial slot and
node, that imported torch and the project and loaded the data once for the whole run
(issue: time goes into training).

Tune starts a fresh actor process for each experiment's trials (and `reuse_actors` reuses it
only within that experiment). On a 2-core machine a fresh process spent about 5 s of CPU
before its first batch: Ray's worker start, `ray.tune`, torch, `torch._dynamo` (imported by
every `torch.optim` optimizer's constructor), the project and the data, where a small
trial trains for 2 s. Here the Tune trainable (`train_trial`) is thin: it holds the trial's
resources, leases a warm `TrialExecutor` on its own node from the run's `ExecutorPool`, and
relays the epochs (`service.backends.tune.trainable.EpochFeed`) one at a time: the executor trains
an epoch, writes its checkpoint into a folder on the node, and the trainable reports the row
and the folder to Tune before asking for the next (which, with `perf.report_ahead`, the
executor trains meanwhile). A trial that cannot lease one (GPU trials,
a node that joined after the pool was made, a pool that is gone, every executor busy)
trains in its own process as before, so the pool is an optimisation, never a dependency.

Leases: the pool gives each lease a fresh token and names the Tune actor holding it; the
same holder leasing again (a reused actor's next trial) gets its executor back, and the
lease of a holder Ray reports dead is taken back when no executor is free.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

POOL_PREFIX = "emerald-warm-"


def pool_name(experiment_dir: str | Path) -> str:
    """The pool's actor name for one experiment folder: a resumed run finds it again."""
    digest = hashlib.sha1(str(Path(experiment_dir).resolve()).encode()).hexdigest()[:12]
    return POOL_PREFIX + digest


class TrialExecutor:
    """One warm process (a Ray actor with no resources of its own: its trial's thin actor
    holds them) that trains one leased trial at a time, epoch by epoch."""

    def __init__(self) -> None:
        import torch

        # The imports are the point. Not service.backends.tune.searching (ray.tune and pandas,
        # about 1 s of CPU while the run starts): only trials with an in-trial controller need it.
        import service.backends.tune.trainable  # noqa: F401

        # torch.optim's constructors import torch._dynamo on first use: do it now.
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        self.lease: str | None = None
        self.feed: Any = None  # the leased trial's service.backends.tune.trainable.EpochFeed
        self.trials = 0

    def ready(self) -> int:
        return os.getpid()

    def _drop(self) -> None:
        if self.feed is not None:
            self.feed.close()  # a trial Tune stopped or paused: its loop ends here
        self.feed = None

    def begin(self, lease: str, config: dict[str, Any], checkpoint: str | None,
              trial_id: str) -> None:
        """Start a trial (from Tune's checkpoint folder, read before this returns)."""
        from service.backends.tune.trainable import EpochFeed, load_state

        state = load_state(checkpoint) if checkpoint else None
        self._drop()
        self.lease = lease
        self.feed = EpochFeed(config, state=state, trial_id=trial_id)
        self.trials += 1

    def step(self, lease: str) -> tuple[dict[str, Any], str | None] | None:
        """The trial's next epoch: its row and its checkpoint folder (None when the epoch
        has no checkpoint), or None when the trial has ended. The folder lives until the
        next call, by which time the caller has reported it."""
        if lease != self.lease or self.feed is None:
            raise RuntimeError("warm trial process: this trial's lease is no longer held (the "
                               "process restarted, or the lease was taken back from a holder "
                               "Ray reported dead); Tune retries the trial from its checkpoint")
        try:
            return next(self.feed)
        except StopIteration:
            self._drop()
            return None

    def end(self, lease: str) -> None:
        if lease == self.lease:
            self.close()

    def close(self) -> None:
        """End whatever trial is leased (its loop and checkpoint folders): also called
        when the run is over and the process is about to be killed, which would leave the
        folders behind."""
        self._drop()
        self.lease = None


class ExecutorPool:
    """The run's executors by node, and their leases."""

    def __init__(self, slots: dict[str, int], prestart: dict[str, int] | None = None
                 ) -> None:
        self.capacity = {node: count for node, count in slots.items() if count > 0}
        # made when first needed, up to a node's trial slots: a run whose trials never
        # overlap keeps one, and none starts on a node no trial uses; `prestart` starts
        # some at once (the driver's node: they warm up while Tune starts, instead of
        # after the first trials' actors asked for them)
        self.executors: dict[str, list[Any]] = {node: [] for node in self.capacity}
        for node, count in (prestart or {}).items():
            for _ in range(min(count, self.capacity.get(node, 0))):
                self.executors[node].append(self._new_executor(node))
        # (node, index) -> (lease, holder id, holder handle)
        self.leases: dict[tuple[str, int], tuple[str, str, Any]] = {}
        self.granted = 0
        self.refused = 0

    @staticmethod
    def _new_executor(node: str) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return ray.remote(num_cpus=0, max_restarts=-1)(TrialExecutor).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()

    def ready(self) -> int:
        """Waits until every executor made so far is warm; how many there are."""
        import ray

        handles = [h for hs in self.executors.values() for h in hs]
        ray.get([h.ready.remote() for h in handles])
        return len(handles)

    def _dead(self, holder: Any) -> bool:
        import ray

        ref = holder.__ray_ready__.remote()
        done, _ = ray.wait([ref], timeout=0.2)
        if not done:
            return False  # alive, busy with its trial
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:
            return True
        return False

    def acquire(self, node: str, holder_id: str, holder: Any) -> tuple[Any, str] | None:
        """An executor on `node` and a fresh lease token for `holder`, or None."""
        handles = self.executors.get(node, [])
        keys = [(node, i) for i in range(len(handles))]
        mine = [k for k in keys if k in self.leases and self.leases[k][1] == holder_id]
        free = [k for k in keys if k not in self.leases]
        if not mine and not free and len(handles) < self.capacity.get(node, 0):
            handles.append(self._new_executor(node))
            free = [(node, len(handles) - 1)]
        key = (mine or free or [None])[0]
        if key is None:
            key = next((k for k in keys if self._dead(self.leases[k][2])), None)
        if key is None:
            self.refused += 1
            return None
        lease = uuid.uuid4().hex
        self.leases[key] = (lease, holder_id, holder)
        self.granted += 1
        return handles[key[1]], lease

    def release(self, lease: str) -> None:
        for key, held in list(self.leases.items()):
            if held[0] == lease:
                del self.leases[key]

    def close(self, timeout: float) -> int:
        """Close every executor (`TrialExecutor.close`), waiting at most `timeout` s; how
        many answered in time."""
        import ray

        refs = [h.close.remote() for hs in self.executors.values() for h in hs]
        if not refs:
            return 0
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        self.leases.clear()
        return len(done)

    def stats(self) -> dict[str, int]:
        return {"executors": sum(len(h) for h in self.executors.values()),
                "capacity": sum(self.capacity.values()),
                "granted": self.granted, "refused": self.refused, "held": len(self.leases)}


def start_pool(name: str, cpus_per_trial: float, prestart: int = 0) -> Any:
    """Make the run's pool: on every alive node, up to as many executors as trials fit on
    its CPUs, each made when a trial first finds none free, but `prestart` of them on this
    node made at once. Returns the pool's handle (the caller kills it at the end of the
    run)."""
    import ray

    slots = {n["NodeID"]: int(n["Resources"].get("CPU", 0) // max(cpus_per_trial, 1e-9))
             for n in ray.nodes() if n.get("Alive")}
    here = {ray.get_runtime_context().get_node_id(): prestart} if prestart > 0 else None
    return ray.remote(num_cpus=0, name=name, max_restarts=0)(ExecutorPool).remote(slots,
                                                                                   here)


POOL_CLOSE_S = 10.0  # an idle executor closes in milliseconds; one stuck is killed anyway


def stop_pool(pool: Any, timeout: float = POOL_CLOSE_S) -> None:
    """End the pool at the end of a run: first its executors' trials (a trial Tune ended
    without its trainable's `end` reaching the executor still holds checkpoint folders, on
    whichever node it ran), then the pool and with it the executors (it owns them)."""
    import ray

    try:
        ray.get(pool.close.remote(timeout), timeout=timeout + 5)
    except Exception:  # noqa: BLE001 - gone or stuck: killed below either way
        pass
    try:
        ray.kill(pool)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _lease(name: str) -> tuple[Any, Any, str] | None:
    """(pool, executor, lease) for this trial, or None to train here."""
    import ray

    try:
        pool = ray.get_actor(name)
    except ValueError:  # no such pool (a resumed run before its pool exists, a test)
        return None
    context = ray.get_runtime_context()
    try:
        got = ray.get(pool.acquire.remote(context.get_node_id(), context.get_actor_id(),
                                          context.current_actor))
    except ray.exceptions.RayError as err:  # the pool went away: train here
        logging.getLogger(__name__).warning("warm trial processes unavailable (%s): this "
                                            "trial trains in its own process", err)
        return None
    return None if got is None else (pool, got[0], got[1])


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: a CPU trial of a run with a pool trains in a warm process
    (module docstring); any other in this process
    (`service.backends.tune.trainable.train_trial`)."""
    import ray
    from ray import tune

    name = (config.get("run") or {}).get("warm_pool")
    leased = _lease(name) if name and not ray.get_gpu_ids() else None
    if leased is None:
        from service.backends.tune.trainable import train_trial as train_here

        train_here(config)
        return
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint
    pool, executor, lease = leased
    try:
        checkpoint = tune.get_checkpoint()
        trial_id = tune.get_context().get_trial_id() or "local"
        if checkpoint is None:
            ray.get(executor.begin.remote(lease, config, None, trial_id))
        else:
            with checkpoint.as_directory() as folder:
                ray.get(executor.begin.remote(lease, config, folder, trial_id))
        while (out := ray.get(executor.step.remote(lease))) is not None:
            row, folder = out
            tune.report(row, checkpoint=None if folder is None
                        else tune.Checkpoint.from_directory(folder))
    finally:  # also when Tune stops the trial (SystemExit inside tune.report)
        executor.end.remote(lease)
        pool.release.remote(lease)
