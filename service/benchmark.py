"""Benchmarks that print figures with a reference measured in the same run.

    python -m service.benchmark throughput   # trainer images/s vs a bare PyTorch loop
    python -m service.benchmark overhead     # Tune per-trial overhead with a no-op trainable
    python -m service.benchmark emerald      # EMERALD-O suggest/update vs Optuna's suggest
    python -m service.benchmark scaling      # trials/min on 1 vs 2 local nodes (linear = 2x)

Not tests: timings depend on the machine. Each prints its ratio to the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, batch_size: int, seed: int) -> float:
    """The reference: the shortest correct PyTorch training epoch on in-memory tensors."""
    model.train()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch_size):
        idx = order[i:i + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return x.shape[0] / (time.perf_counter() - start)


def throughput(backbone: str, dataset: str, epochs: int, batch_size: int, device: str,
               threads: int) -> dict[str, Any]:
    """Median images/s of `Trainer.train_epoch` and of `plain_epoch`, alternating epochs so
    both see the same machine state."""
    from service.data import load_splits
    from service.trainer import HParams, Trainer

    torch.set_num_threads(threads)
    splits = load_splits(dataset, seed=0)
    hp = HParams(optimizer="adam", lr=1e-3, batch_size=batch_size)
    trainer = Trainer.build(backbone, splits, hp, device=device, seed=0)
    ref = Trainer.build(backbone, splits, hp, device=device, seed=0)
    ref_opt = torch.optim.Adam(ref.model.parameters(), lr=1e-3)
    x, y = ref.train_x, ref.train_y
    ours, plain = [], []
    trainer.train_epoch()  # warm-up both (allocator, kernels)
    plain_epoch(ref.model, ref_opt, x, y, batch_size, 0)
    for epoch in range(epochs):
        ours.append(trainer.train_epoch().images_per_s)
        plain.append(plain_epoch(ref.model, ref_opt, x, y, batch_size, epoch))
    return {"backbone": backbone, "dataset": dataset, "device": device, "threads": threads,
            "images": x.shape[0], "trainer_images_per_s": statistics.median(ours),
            "plain_images_per_s": statistics.median(plain),
            "ratio": statistics.median(ours) / statistics.median(plain)}


def _noop(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"val_acc": 0.0})


def overhead(trials: int, reuse: bool) -> dict[str, Any]:
    """Seconds per trial of a Tune experiment whose trainable reports once, against a Ray
    task round trip as the reference."""
    import tempfile

    import ray
    from ray import tune

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        def task() -> None:
            return None

        ray.get([task.remote() for _ in range(4)])
        start = time.perf_counter()
        ray.get([task.remote() for _ in range(trials)])
        task_s = (time.perf_counter() - start) / trials
        with tempfile.TemporaryDirectory() as storage:
            tuner = tune.Tuner(
                tune.with_resources(_noop, {"cpu": 1}),
                tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=reuse,
                                            max_concurrent_trials=2),
                run_config=tune.RunConfig(storage_path=storage, name="noop", verbose=0),
            )
            start = time.perf_counter()
            tuner.fit()
            tune_s = (time.perf_counter() - start) / trials
    finally:
        ray.shutdown()
    return {"trials": trials, "reuse_actors": reuse, "tune_s_per_trial": tune_s,
            "ray_task_s": task_s, "ratio_to_task": tune_s / task_s}


def scaling_run(trials: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """One measurement, as a driver of the cluster in RAY_ADDRESS (token auth from the
    environment, which Ray reads when it is imported: hence a process per cluster)."""
    import tempfile

    import ray

    from service.config import build_config
    from service.experiment import Cell, build_tuner

    ray.init(log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="scale-") as storage:
            cfg = build_config({
                "name": "scale", "storage": storage, "searchers": ["random"],
                "backbones": ["resnet18"], "budget": {"trials": trials, "epochs": 4},
                "concurrency": concurrency, "final_test": False,
            })
            tuner = build_tuner(cfg, Cell("random", "resnet18", 0),
                                trainable=fixed_duration(seconds))
            start = time.perf_counter()
            results = tuner.fit()
            elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"elapsed_s": elapsed, "trials_per_min": trials * 60 / elapsed,
            "nodes_used": len({r.metrics.get("node_id") for r in results}),
            "errors": len(results.errors)}


def scaling(trials: int, seconds: float, cpus_per_node: int) -> dict[str, Any]:
    """Trials per minute of one Tune experiment (the service's own Tuner, random search,
    fixed-duration trials, 1 CPU each) on a local 1-node and then a 2-node cluster."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from cluster import local_cluster

    out: dict[str, Any] = {"trials": trials, "seconds": seconds, "cpus_per_node": cpus_per_node}
    for nodes in (1, 2):
        with tempfile.TemporaryDirectory(prefix="scale-", dir="/tmp") as folder:
            state = local_cluster.start(Path(folder) / "c", nodes=nodes, cpus=cpus_per_node,
                                        gpus=0)
            try:
                env = {**os.environ, **state.client_env(), "RAY_AIR_NEW_OUTPUT": "0"}
                proc = subprocess.run(
                    [sys.executable, "-m", "service.benchmark", "scaling-run",
                     "--trials", str(trials), "--seconds", str(seconds),
                     "--concurrency", str(nodes * cpus_per_node)],
                    env=env, capture_output=True, text=True, check=True)
                out[nodes] = json.loads(proc.stdout.strip().splitlines()[-1])
            finally:
                local_cluster.stop(Path(folder) / "c")
    out["ratio_to_linear"] = out[2]["trials_per_min"] / (2 * out[1]["trials_per_min"])
    return out


def fixed_duration(seconds: float) -> Any:
    """A trainable that takes the same time wherever it runs (the scaling reference)."""
    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        from service.trainable import node_id

        for epoch in range(4):
            time.sleep(seconds / 4)
            tune.report({"val_acc": 0.1 * epoch, "node_id": node_id()})
    return trainable


def emerald_speed(calls: int, algo: str) -> dict[str, Any]:
    """Median latency of EmeraldSearch.suggest and of its learner update (inside
    on_trial_complete) next to OptunaSearch.suggest on the same (default) space."""
    import numpy as np
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from rllib_policies import EmeraldSearch, EmeraldSettings
    from service.space import default_space

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    rng = np.random.default_rng(0)
    emerald = EmeraldSearch(space, seed=0, settings=EmeraldSettings(algo=algo), max_epochs=3)
    optuna_search = OptunaSearch(space=OptunaSearch.convert_search_space(space.to_tune()),
                                 metric="val_acc", mode="max",
                                 sampler=optuna.samplers.TPESampler(seed=0))
    suggest_ms, update_ms, optuna_ms = [], [], []
    for i in range(calls):
        result = {"val_acc": float(rng.uniform(0.1, 0.9)), "train_loss": 1.0,
                  "training_iteration": 3}
        start = time.perf_counter()
        emerald.suggest(f"e{i}")
        suggest_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        emerald.on_trial_complete(f"e{i}", result=result)
        update_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        optuna_search.suggest(f"o{i}")
        optuna_ms.append(1000 * (time.perf_counter() - start))
        optuna_search.on_trial_complete(f"o{i}", result=result)
    emerald.learner.stop()
    return {"algo": algo, "calls": calls, "suggest_ms": statistics.median(suggest_ms),
            "update_ms": statistics.median(update_ms),
            "update_mean_ms": statistics.fmean(update_ms),
            "optuna_suggest_ms": statistics.median(optuna_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--backbone", default="resnet18@0.25")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--threads", type=int, default=1)
    o = sub.add_parser("overhead")
    o.add_argument("--trials", type=int, default=40)
    e = sub.add_parser("emerald")
    e.add_argument("--calls", type=int, default=200)
    e.add_argument("--algo", choices=("dqn", "ppo"), default="dqn")
    sc = sub.add_parser("scaling")
    sc.add_argument("--trials", type=int, default=24)
    sc.add_argument("--seconds", type=float, default=4.0, help="duration of every trial")
    sc.add_argument("--cpus-per-node", type=int, default=2)
    sr = sub.add_parser("scaling-run", help="(used by scaling) one measurement")
    sr.add_argument("--trials", type=int, required=True)
    sr.add_argument("--seconds", type=float, required=True)
    sr.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    if args.what == "throughput":
        r = throughput(args.backbone, args.dataset, args.epochs, args.batch_size, args.device,
                       args.threads)
        print(f"{r['backbone']} on {r['dataset']} ({r['images']} images, {r['device']}, "
              f"{r['threads']} thread(s)):")
        print(f"  trainer     {r['trainer_images_per_s']:9.1f} images/s")
        print(f"  plain loop  {r['plain_images_per_s']:9.1f} images/s")
        print(f"  ratio       {r['ratio']:9.3f}")
    elif args.what == "scaling-run":
        import json

        print(json.dumps(scaling_run(args.trials, args.seconds, args.concurrency)))
    elif args.what == "scaling":
        r = scaling(args.trials, args.seconds, args.cpus_per_node)
        print(f"{r['trials']} trials of {r['seconds']:g} s, 1 CPU each, "
              f"{r['cpus_per_node']} CPUs per node (local cluster, loopback):")
        for nodes in (1, 2):
            n = r[nodes]
            print(f"  {nodes} node(s): {n['trials_per_min']:6.1f} trials/min "
                  f"({n['elapsed_s']:.1f} s, trials on {n['nodes_used']} node(s), "
                  f"{n['errors']} errors)")
        print(f"  ratio to linear (2 nodes / 2 x 1 node): {r['ratio_to_linear']:.3f}")
    elif args.what == "emerald":
        r = emerald_speed(args.calls, args.algo)
        print(f"EMERALD-O ({r['algo']}), medians over {r['calls']} calls, default space:")
        print(f"  emerald suggest          {r['suggest_ms']:8.2f} ms")
        print(f"  emerald complete+update  {r['update_ms']:8.2f} ms "
              f"(mean {r['update_mean_ms']:.2f} ms)")
        print(f"  optuna suggest (TPE)     {r['optuna_suggest_ms']:8.2f} ms")
        print(f"  suggest ratio emerald/optuna {r['suggest_ms'] / r['optuna_suggest_ms']:.3f}")
    else:
        for reuse in (True, False):
            r = overhead(args.trials, reuse)
            print(f"reuse_actors={reuse}: Tune {r['tune_s_per_trial'] * 1000:.0f} ms/trial "
                  f"(no-op trainable, {r['trials']} trials, 2 slots); Ray task round trip "
                  f"{r['ray_task_s'] * 1000:.1f} ms; ratio {r['ratio_to_task']:.0f}x")


if __name__ == "__main__":
    main()
