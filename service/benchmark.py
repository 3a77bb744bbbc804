"""Benchmarks that print figures with a reference measured in the same run.

    python -m service.benchmark throughput   # trainer images/s vs a bare PyTorch loop
    python -m service.benchmark overhead     # Tune per-trial overhead with a no-op trainable
    python -m service.benchmark eval         # a validation pass in each evaluation layout
    python -m service.benchmark emerald      # EMERALD-O suggest/update vs Optuna's suggest
    python -m service.benchmark scaling      # trials/min on 1 vs 2 local nodes (linear = 2x)
    python -m service.benchmark gpu          # the GPU check: torch only, no Ray (make gpu-check)

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
                y: torch.Tensor, batch_size: int, seed: int,
                amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> float:
    """The reference: the shortest correct PyTorch training epoch on in-memory tensors (with
    the same autocast and memory format as the trainer it is compared with)."""
    model.train()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed)).to(
        x.device)
    loss_fn = nn.CrossEntropyLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch_size):
        idx = order[i:i + batch_size]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            loss = loss_fn(model(x[idx].contiguous(memory_format=fmt)).float(), y[idx])
        loss.backward()
        opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return x.shape[0] / (time.perf_counter() - start)


GPU_BACKBONES = ("resnet18", "vgg16", "vgg19", "efficientnetv2_b0")
"""Every built-in backbone of Table 9, at full width."""
GPU_SWITCHES = ("fp32", "bf16", "channels_last", "bf16+channels_last", "compile")
"""The trainer's settings measured: everything off, each switch alone, the CUDA default
(bf16 + channels-last), and the default with torch.compile."""


def _switch(name: str) -> Any:
    from service.training.trainer import Perf

    return {"fp32": Perf(amp="off", channels_last="off"),
            "bf16": Perf(amp="bf16", channels_last="off"),
            "channels_last": Perf(amp="off", channels_last="on"),
            "bf16+channels_last": Perf(amp="bf16", channels_last="on"),
            "compile": Perf(amp="bf16", channels_last="on", compile=True)}[name]


def cifar_shaped(images: int, seed: int = 0) -> Any:
    """Random CIFAR-10-shaped splits (3 x 32 x 32, 10 classes): throughput needs the shape,
    not the pictures, and nothing is downloaded."""
    from service.training.data import Splits

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (images,), generator=gen)
    return Splits(x, y, x[:256], y[:256], x[:256], y[:256], num_classes=10, name="cifar-shaped")


def gpu_check(backbones: tuple[str, ...] = GPU_BACKBONES, switches: tuple[str, ...] =
              GPU_SWITCHES, images: int = 10_240, batch_size: int = 256, epochs: int = 3,
              width: float = 1.0, device: str | None = None) -> list[dict[str, Any]]:
    """Per backbone and switch: median images/s of `Trainer.train_epoch` over `epochs` (after
    one warm-up epoch, which also compiles), of `plain_epoch` with the same settings on the
    same model and data (the ratio), peak GPU memory, and how many such trials fit on one
    GPU at once by memory (90% of it; fractional-GPU packing)."""
    from service.training.trainer import HParams, Trainer

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    splits = cifar_shaped(images)
    hp = HParams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=batch_size)
    total = torch.cuda.get_device_properties(dev).total_memory if cuda else 0
    rows = []
    for backbone in backbones:
        name = backbone if width == 1.0 else f"{backbone}@{width:g}"
        for switch in switches:
            perf = _switch(switch)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            trainer = Trainer.build(name, splits, hp, device=dev, seed=0, perf=perf)
            trainer.train_epoch()  # warm-up: allocator, cuDNN autotuning, compilation
            ours = [trainer.train_epoch().images_per_s for _ in range(epochs)]
            peak = torch.cuda.max_memory_allocated(dev) if cuda else 0
            ref = Trainer.build(name, splits, hp, device=dev, seed=0, perf=perf)
            opt = torch.optim.SGD(ref.model.parameters(), lr=0.05, momentum=0.9)
            with ref.kernels():  # the same kernels as the trainer's
                plain_epoch(ref.forward, opt, ref.train_x, ref.train_y, batch_size, 0,
                            ref.amp_dtype, ref.channels_last)
                bare = [plain_epoch(ref.forward, opt, ref.train_x, ref.train_y, batch_size,
                                    e + 1, ref.amp_dtype, ref.channels_last)
                        for e in range(epochs)]
            rows.append({
                "backbone": name, "switch": switch, "device": str(dev),
                "trainer_images_per_s": statistics.median(ours),
                "bare_images_per_s": statistics.median(bare),
                "ratio": statistics.median(ours) / statistics.median(bare),
                "peak_mem_gib": peak / 2 ** 30 if cuda else float("nan"),
                "trials_per_gpu": int(0.9 * total // peak) if cuda and peak else None,
            })
            del trainer, ref, opt
    return rows


def print_gpu_check(rows: list[dict[str, Any]]) -> None:
    """The figures as a table, each backbone's speed-up over its fp32 row beside them."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"{props.name}, {props.total_memory / 2 ** 30:.0f} GiB, torch {torch.__version__}")
    else:
        print(f"no GPU: the reduced form on the CPU (torch {torch.__version__})")
    print(f"{'backbone':22s} {'switch':20s} {'trainer img/s':>13s} {'bare img/s':>11s} "
          f"{'ratio':>6s} {'vs fp32':>7s} {'peak GiB':>8s} {'per GPU':>7s}")
    fp32 = {r["backbone"]: r["trainer_images_per_s"] for r in rows if r["switch"] == "fp32"}
    for r in rows:
        base = fp32.get(r["backbone"])
        speedup = f"{r['trainer_images_per_s'] / base:7.2f}" if base else f"{'':7s}"
        packing = "" if r["trials_per_gpu"] is None else str(r["trials_per_gpu"])
        print(f"{r['backbone']:22s} {r['switch']:20s} {r['trainer_images_per_s']:13.0f} "
              f"{r['bare_images_per_s']:11.0f} {r['ratio']:6.3f} {speedup} "
              f"{r['peak_mem_gib']:8.2f} {packing:>7s}")


def throughput(backbone: str, dataset: str, epochs: int, batch_size: int, device: str,
               threads: int) -> dict[str, Any]:
    """Median images/s of `Trainer.train_epoch` and of `plain_epoch`, alternating epochs so
    both see the same machine state."""
    from service.training.data import load_splits
    from service.training.trainer import HParams, Trainer

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


EVAL_CASES = ("vgg16@0.25:32", "vgg16@0.125:16", "resnet18@0.125:16", "resnet18@0.0625:16")
"""`backbone:image size` on digits: the presets' models (cpu-30s, cpu-small, table9-cpu)."""


def eval_speed(case: str, repeats: int = 5, threads: int = 1) -> list[dict[str, Any]]:
    """Median milliseconds of one validation pass (`Trainer.score`) of `case` in each
    evaluation layout and batch size, the default layout at 512 (the old evaluation) the
    reference; also which layout and batch size `perf: auto` picks on this device."""
    from service.training.data import load_splits
    from service.training.trainer import HParams, Perf, Trainer

    torch.set_num_threads(threads)
    backbone, size = case.rsplit(":", 1)
    splits = load_splits("digits", image_size=int(size), seed=0)
    auto = Trainer.build(backbone, splits, HParams(), seed=0)
    rows = []
    for layout in ("off", "on"):
        for batch in (512, 128):
            trainer = Trainer.build(backbone, splits, HParams(), seed=0,
                                    perf=Perf(eval_channels_last=layout, eval_batch_size=batch))
            trainer.score(splits.val_x, splits.val_y)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                trainer.score(splits.val_x, splits.val_y)
                times.append(1000 * (time.perf_counter() - start))
            rows.append({"case": case, "channels_last": layout == "on", "batch": batch,
                         "ms": statistics.median(times),
                         "auto": (auto.eval_channels_last, auto.eval_batch_size) ==
                         (layout == "on", batch)})
    ref = rows[0]["ms"]
    for row in rows:
        row["speedup"] = ref / row["ms"]
    return rows


def _noop(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"val_acc": 0.0})


def noop_trial(config: dict[str, Any]) -> None:
    """The trainable's Tune interface without training: one row per epoch with a small
    checkpoint, the controller asked at each step boundary and told when the trial ends,
    as `service.backends.tune.trainable.train_loop` does; `val_acc` a smooth function of the
    rate."""
    import math
    import os
    import tempfile

    from ray import tune

    from service.backends.tune.searching import ControllerClient
    from service.backends.tune.trainable import split_config
    from service.core.api import Observation

    run, hp = split_config(config)
    trial_id = tune.get_context().get_trial_id() or "local"
    client = ControllerClient(run.controller) if run.controller else None
    step: list[dict[str, Any]] = []
    row: dict[str, Any] = {}
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a paused or cloned trial goes on from its epoch
        with checkpoint.as_directory() as folder:
            start = int(open(os.path.join(folder, "state")).read())
    for epoch in range(start, run.epochs):
        if client is not None and epoch % max(1, run.controller_every) == 0:
            changes, _ = client.decide(Observation(trial_id, epoch, run.epochs, hp, step))
            hp, step = {**hp, **changes}, []
        acc = 0.9 - 0.05 * abs(math.log10(float(hp.get("lr", 1e-3))) + 3) - 0.2 / (epoch + 1)
        row = {"val_acc": acc, "val_loss": 1 - acc, "train_acc": acc, "train_loss": 1 - acc,
               "grad_norm": 1.0, "epoch_time_s": 0.0, "epoch": epoch + 1, "diverged": False,
               "pid": os.getpid()}
        step.append(row)
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "state"), "w") as f:
                f.write(str(epoch + 1))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(folder))
    if client is not None:
        client.finish(Observation(trial_id, run.epochs, run.epochs, hp, step))


OVERHEAD_ENTRIES = ("random", "optuna", "asha", "pbt", "emerald-dynamic")
"""One entry per plan kind: searchers (a sampler, a model-based one), schedulers (a
multi-fidelity one, a population) and an in-trial controller."""


def marginal(run: Any, n: int) -> tuple[float, float, tuple[Any, Any]]:
    """(seconds per unit, fixed seconds, both runs' outputs) of `run(k) -> (output, wall
    seconds, units done)` at k = n and 2n: the slope between the two sizes is the cost of
    one more trial (or epoch), the rest the experiment's fixed start and end."""
    small, wall1, done1 = run(n)
    large, wall2, done2 = run(2 * n)
    per = (wall2 - wall1) / max(1, done2 - done1)
    return per, wall1 - per * done1, (small, large)


def overhead(trials: int, reuse: bool) -> dict[str, Any]:
    """Seconds per trial of a Tune experiment whose trainable reports once (the slope
    between `trials` and twice as many, see `marginal`), against a Ray task round trip."""
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

        def run(n: int) -> tuple[None, float, int]:
            with tempfile.TemporaryDirectory() as storage:
                tuner = tune.Tuner(
                    tune.with_resources(_noop, {"cpu": 1}),
                    tune_config=tune.TuneConfig(num_samples=n, reuse_actors=reuse,
                                                max_concurrent_trials=1),
                    run_config=tune.RunConfig(storage_path=storage, name="noop", verbose=0),
                )
                start = time.perf_counter()
                tuner.fit()
                return None, time.perf_counter() - start, n

        tune_s, fixed_s, _ = marginal(run, trials)
    finally:
        ray.shutdown()
    return {"trials": trials, "reuse_actors": reuse, "tune_s_per_trial": tune_s,
            "fixed_s": fixed_s, "ray_task_s": task_s, "ratio_to_task": tune_s / task_s}


def plan_overhead(entries: tuple[str, ...], trials: int, epochs: int,
                  concurrency: int = 1) -> list[dict[str, Any]]:
    """Milliseconds per trial and per epoch of each entry's plan run by the service's own
    Tuner (`build_tuner`: its searcher or scheduler, the controller host, loggers,
    checkpoints and stoppers) on `noop_trial`, `concurrency` trials at a time (the presets'
    1) on 2 CPUs, actors reused, after a warm-up experiment: the slope between `trials`
    and twice as many (`marginal`), so the experiment's own start and end (`fixed_s`) is
    not spread over its trials. A population's "trials" are its members, so per epoch is
    its figure."""
    import tempfile

    import ray

    from service.backends.tune.experiment import build_tuner
    from service.core import registry
    from service.core.config import build_config
    from service.core.layout import Cell

    def run(entry: str, n: int) -> tuple[Any, float, int]:
        with tempfile.TemporaryDirectory() as storage:
            cfg = build_config({
                "name": "overhead", "storage": storage, "searchers": [entry],
                "backbones": ["resnet18@0.0625"], "seeds": [0], "concurrency": concurrency,
                "budget": {"trials": n, "epochs": epochs},
                "dataset": {"name": "synthetic", "max_train": 100}})
            tuner = build_tuner(cfg, Cell(entry, cfg.backbones[0], 0), trainable=noop_trial)
            scheduler = type(tuner._local_tuner._tune_config.scheduler).__name__
            kind = registry.entry(entry).kind
            kind = f"{kind} + {scheduler}" if scheduler != "NoneType" else kind
            start = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - start
            done = sum(r.metrics.get("training_iteration", 0) for r in results)
            return (results, kind, done), wall, len(results)

    rows = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    try:
        run("random", 4)  # warm-up
        for entry in entries:
            per, fixed, (small, (results, kind, done)) = marginal(
                lambda n, e=entry: run(e, n), trials)
            epochs_per_trial = (done - small[2]) / max(1, len(results) - len(small[0]))
            rows.append({"entry": entry, "kind": kind, "trials": len(results),
                         "epochs": int(done), "errors": len(results.errors),
                         "fixed_s": fixed, "ms_per_trial": 1000 * per,
                         "ms_per_epoch": 1000 * per / max(1e-9, epochs_per_trial)})
    finally:
        ray.shutdown()
    return rows


def scaling_run(trials: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """One measurement, as a driver of the cluster in RAY_ADDRESS (token auth from the
    environment, which Ray reads when it is imported: hence a process per cluster)."""
    import tempfile

    import ray

    from service.backends.tune.experiment import Cell, build_tuner
    from service.core.config import build_config

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

        from service.backends.tune.trainable import node_id

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
    from service.backends.tune.spaces import to_tune
    from service.core.space import default_space

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    rng = np.random.default_rng(0)
    emerald = EmeraldSearch(space, seed=0, settings=EmeraldSettings(algo=algo), max_epochs=3)
    optuna_search = OptunaSearch(space=OptunaSearch.convert_search_space(to_tune(space)),
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
    o.add_argument("--trials", type=int, default=60)
    o.add_argument("--epochs", type=int, default=1, help="epochs per trial of the plans")
    o.add_argument("--entries", default=",".join(OVERHEAD_ENTRIES))
    ev = sub.add_parser("eval", help="a validation pass in each evaluation layout and batch size")
    ev.add_argument("--cases", default=",".join(EVAL_CASES))
    ev.add_argument("--repeats", type=int, default=5)
    e = sub.add_parser("emerald")
    e.add_argument("--calls", type=int, default=200)
    e.add_argument("--algo", choices=("dqn", "ppo"), default="dqn")
    sc = sub.add_parser("scaling")
    sc.add_argument("--trials", type=int, default=24)
    sc.add_argument("--seconds", type=float, default=4.0, help="duration of every trial")
    sc.add_argument("--cpus-per-node", type=int, default=2)
    g = sub.add_parser("gpu", help="the GPU check (torch only, no Ray); on a machine without "
                       "a GPU its reduced form on the CPU")
    g.add_argument("--backbones", default=",".join(GPU_BACKBONES))
    g.add_argument("--switches", default=",".join(GPU_SWITCHES))
    g.add_argument("--images", type=int, default=None,
                   help="images per epoch (default 10240 on a GPU, 256 on the CPU)")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--width", type=float, default=None,
                   help="backbone width (default 1 on a GPU, 0.0625 on the CPU)")
    sr = sub.add_parser("scaling-run", help="(used by scaling) one measurement")
    sr.add_argument("--trials", type=int, required=True)
    sr.add_argument("--seconds", type=float, required=True)
    sr.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    if args.what == "gpu":
        cuda = torch.cuda.is_available()
        switches = tuple(x for x in args.switches.split(",") if x)
        if not cuda and args.switches == ",".join(GPU_SWITCHES):
            switches = tuple(x for x in switches if x != "compile")  # minutes on the CPU
        start = time.perf_counter()
        print_gpu_check(gpu_check(
            tuple(x for x in args.backbones.split(",") if x), switches,
            images=args.images or (10_240 if cuda else 256), batch_size=args.batch_size,
            epochs=args.epochs, width=args.width or (1.0 if cuda else 0.0625)))
        print(f"({time.perf_counter() - start:.0f} s)")
        return
    if args.what == "eval":
        print(f"One validation pass (Trainer.score) on the digits' val split, 1 thread, "
              f"median of {args.repeats}; speed-up over the default layout at 512 images a "
              f"batch; * = what perf: auto picks here")
        for case in (c for c in args.cases.split(",") if c):
            for r in eval_speed(case, args.repeats):
                layout = "channels-last" if r["channels_last"] else "default"
                print(f"  {r['case']:<20} {layout:<13} batch {r['batch']:>3} {r['ms']:8.1f} ms"
                      f"  x{r['speedup']:.2f}" + ("  *" if r["auto"] else ""))
        return
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
            n = args.trials if reuse else max(2, args.trials // 6)  # 2 s a trial without
            r = overhead(n, reuse)
            print(f"reuse_actors={reuse}: Tune {r['tune_s_per_trial'] * 1000:.0f} ms/trial "
                  f"+ {r['fixed_s']:.2f} s per experiment (no-op trainable, {n} and {2 * n} "
                  f"trials, one at a time); Ray task round trip {r['ray_task_s'] * 1000:.1f} "
                  f"ms; ratio {r['ratio_to_task']:.0f}x")
        entries = tuple(x for x in args.entries.split(",") if x)
        print(f"The service's plans on a no-op trial ({args.trials} and {2 * args.trials} "
              f"trials x {args.epochs} epoch(s), one at a time as in the presets, actors "
              f"reused, after a warm-up; each epoch reported with a checkpoint; per trial and "
              f"per epoch: the slope between the two sizes; per experiment: the rest):")
        print(f"  {'entry':<16} {'kind':<34} {'ms/trial':>9} {'ms/epoch':>9} "
              f"{'s/experiment':>13}")
        for row in plan_overhead(entries, args.trials, args.epochs):
            print(f"  {row['entry']:<16} {row['kind']:<34} {row['ms_per_trial']:>9.0f} "
                  f"{row['ms_per_epoch']:>9.0f} {row['fixed_s']:>13.2f}"
                  + (f"  ({row['errors']} errors)" if row["errors"] else ""))

if __name__ == "__main__":
    main()
