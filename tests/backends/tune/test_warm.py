"""Warm trial processes (service.backends.tune.warm): leases, an executor's epochs and checkpoint
folders, the same rows as training in the trial's own process, and a run whose trials all trained
in the pool's processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.backends.tune.trainable import RunSettings, trial_steps
from service.backends.tune.warm import ExecutorPool, TrialExecutor, pool_name
from tests.fresh import fresh_python

CONFIG = {
    "optimizer": "adam", "lr": 0.003, "batch_size": 50,
    "run": RunSettings(backbone="resnet18@0.0625", epochs=3, seed=1,
                       dataset={"name": "synthetic", "max_train": 100}).as_dict(),
}
COMPARED = ("val_acc", "val_loss", "train_acc", "train_loss", "epoch", "schedule")


def test_pool_names_follow_the_experiment_folder(tmp_path) -> None:
    assert pool_name(tmp_path / "a") == pool_name(tmp_path / "a")
    assert pool_name(tmp_path / "a") != pool_name(tmp_path / "b")


def test_an_executor_serves_a_trial_epoch_by_epoch_as_the_trial_itself_would() -> None:
    """The rows equal those of the trial trained here; each checkpoint folder holds the
    state until the next epoch is asked for; a stale lease is refused; a trial resumed
    from a handed-out checkpoint goes on from there."""
    here = [row for row, _ in trial_steps(CONFIG, trial_id="t")]
    executor = TrialExecutor()
    executor.begin("lease-1", CONFIG, None, "t")
    rows, folders = [], []
    while (out := executor.step("lease-1")) is not None:
        row, folder = out
        rows.append(row)
        folders.append(folder)
        assert (Path(folder) / "trial_state.pt").exists()
        assert len(folders) == 1 or not Path(folders[-2]).exists()  # the previous: removed
    assert [[r[k] for k in COMPARED] for r in rows] == [[r[k] for k in COMPARED] for r in here]
    assert {r["pid"] for r in rows} == {os.getpid()}
    with pytest.raises(RuntimeError, match="lease is no longer held"):
        executor.step("lease-0")
    # resume from the first epoch's checkpoint in a new lease: epochs 2 and 3 again
    executor.begin("lease-2", CONFIG, None, "t")
    first = executor.step("lease-2")
    executor.begin("lease-3", CONFIG, first[1], "t")  # read before begin returns
    resumed = []
    while (out := executor.step("lease-3")) is not None:
        resumed.append(out[0])
    assert [r["epoch"] for r in resumed] == [2, 3]
    assert [r["val_acc"] for r in resumed] == [r["val_acc"] for r in here[1:]]
    executor.end("lease-3")
    assert executor.feed is None


def test_an_executor_and_its_trials_without_a_controller_do_not_import_ray_tune() -> None:
    """Executors warm up while the run starts, on the CPU the Tune driver needs then:
    ray.tune and pandas (about 1 s of CPU) come only with an in-trial controller."""
    code = ("import sys; from service.backends.tune.warm import TrialExecutor; "
            f"config = {CONFIG!r}; "
            "e = TrialExecutor(); e.begin('l', config, None, 't'); "
            "rows = [o for o in iter(lambda: e.step('l'), None)]; e.end('l'); "
            "print(len(rows), sorted(m for m in ('ray.tune', 'pandas', "
            "'service.backends.tune.searching') if m in sys.modules))")
    assert fresh_python(code) == "3 []"


def test_prestarted_executors_are_made_at_once_within_the_node_s_slots() -> None:
    made: list[str] = []

    class Pool(ExecutorPool):
        @staticmethod
        def _new_executor(node: str) -> str:
            made.append(node)
            return f"ex{len(made) - 1}"

    pool = Pool({"n1": 3, "n2": 2}, prestart={"n1": 5, "n3": 1})
    assert made == ["n1"] * 3  # at most its slots; none on a node without slots
    assert pool.acquire("n1", "a", None)[0] == "ex0"  # prestarted ones are leased first
    assert pool.acquire("n1", "b", None)[0] == "ex1" and len(made) == 3
    assert pool.acquire("n2", "c", None)[0] == "ex3"  # made when first needed, as before
    assert Pool({"n1": 2}).stats()["executors"] == 0


def test_leases(ray_session) -> None:
    """Free executors first, a new one while the node has slots for it; the same holder gets
    its own back with a new token; a node without slots, or with every executor held by a
    live holder, gets none; a dead holder's lease is taken back."""
    ray = ray_session
    node = ray.get_runtime_context().get_node_id()
    pool = ExecutorPool({node: 2})
    made: list[str] = []

    def new_executor(_: str) -> str:  # the lease rules, without warm processes
        made.append(f"ex{len(made)}")
        return made[-1]

    pool._new_executor = new_executor

    @ray.remote(num_cpus=0)
    class Holder:
        def ping(self) -> int:
            return 1

    alive, doomed = Holder.remote(), Holder.remote()
    ray.get([alive.ping.remote(), doomed.ping.remote()])
    ex, lease = pool.acquire(node, "a", alive)
    assert ex == "ex0" and made == ["ex0"]  # made when first needed
    again, lease2 = pool.acquire(node, "a", alive)
    assert again == "ex0" and lease2 != lease
    assert pool.acquire(node, "b", doomed)[0] == "ex1"
    assert pool.acquire(node, "c", alive) is None  # both held by live holders, no more slots
    assert made == ["ex0", "ex1"]
    assert pool.acquire("another-node", "c", alive) is None
    ray.kill(doomed)
    ray.wait([doomed.ping.remote()], timeout=10)
    assert pool.acquire(node, "c", alive)[0] == "ex1"  # taken back from the dead holder
    pool.release(lease2)
    assert pool.acquire(node, "d", alive)[0] == "ex0"
    assert pool.stats() == {"executors": 2, "capacity": 2, "granted": 5, "refused": 2,
                            "held": 2}
    ray.kill(alive)


def test_a_run_trains_every_trial_in_the_pools_processes(ray_session, tmp_path) -> None:
    """Two experiments, one after the other on 2 CPUs: every epoch of every trial was
    trained by one of the pool's two warm processes (not the trials' own), and the run
    ends with the pool gone; `warm_pool: false` trains in the trials' own processes."""
    import ray

    from service.backends.tune.experiment import run_all
    from service.core.config import build_config
    from service.reports.load import load_epochs

    pids: dict[bool, set[int]] = {}
    for warm in (True, False):
        cfg = build_config({
            "name": f"warm-{warm}", "storage": str(tmp_path), "searchers": ["random"],
            "backbones": ["resnet18@0.0625"], "seeds": [0, 1], "concurrency": 1,
            "budget": {"trials": 2, "epochs": 2}, "warm_pool": warm, "final_test": False,
            "dataset": {"name": "synthetic", "max_train": 100},
            "space": {"optimizer": "adam", "lr": {"loguniform": [1e-3, 1e-2]},
                      "batch_size": 50}})
        summaries = run_all(cfg, log=lambda *_: None)
        assert not [s for s in summaries if "failed" in s]
        epochs = load_epochs(cfg.experiment_dir)
        assert len(epochs) == 2 * 2 * 2
        pids[warm] = set(epochs.pid.astype(int))
        with pytest.raises(ValueError):
            ray.get_actor(pool_name(cfg.experiment_dir))
        run = json.loads((cfg.experiment_dir / "run.json").read_text())
        assert run["cells"] == 2
    assert len(pids[True]) <= 2  # the pool's processes served all 8 trials x epochs
    assert len(pids[False]) >= 2 and not pids[False] & pids[True]  # one actor per cell


def test_stopping_the_pool_ends_its_trials_and_their_checkpoint_folders(ray_session) -> None:
    """A trial still leased when the run ends (Tune ended it without its trainable's `end`
    reaching the executor) holds epoch folders: `stop_pool` ends it before killing the
    pool, so none is left behind, and the pool is gone."""
    import tempfile

    from service.backends.tune.trainable import CHECKPOINT_PREFIX
    from service.backends.tune.warm import start_pool, stop_pool

    ray = ray_session
    name = "emerald-warm-test-stop"
    pool = start_pool(name, cpus_per_trial=1)
    node = ray.get_runtime_context().get_node_id()
    executor, lease = ray.get(pool.acquire.remote(node, "holder", None))
    ray.get(executor.begin.remote(lease, CONFIG, None, "t"))
    row, folder = ray.get(executor.step.remote(lease))
    assert (Path(folder) / "trial_state.pt").exists()
    stop_pool(pool)
    left = Path(tempfile.gettempdir()).glob(f"{CHECKPOINT_PREFIX}{row['pid']}@*")
    assert not Path(folder).exists() and not list(left)
    with pytest.raises(ValueError):
        ray.get_actor(name)
