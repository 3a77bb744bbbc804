"""Figures behind docs/benchmarks.md's paragraph on the live report and the command's start
(issue 14), measured in the checkout this runs from (run it in each checkout to compare):

    python docs/results/overhead/measure_start.py [--runs 3]

- exit 2: seconds until `bench --preset cpu-small --backbones vgg17` exits (a bad config);
- to ray.init: seconds from a fresh interpreter until `bench --preset cpu-small` calls
  `ray.init` (replaced here by one that stops the command), and whether torch was imported;
- evaluation: one validation pass of cpu-30s's model (VGG-16@0.25, digits at 32 px, one
  thread, channels-last, 128 a batch), its seconds and its share per operator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TO_RAY_INIT = """
import sys, time
t = time.perf_counter()
import ray
class Stop(Exception):
    pass
def stop(*a, **k):
    raise Stop()
ray.init = stop
sys.argv = ["service", "bench", "--preset", "cpu-small", "--storage", sys.argv[1]]
try:
    from service.__main__ import main
    main()
except Stop:
    pass
print(round(time.perf_counter() - t, 2), "torch" in sys.modules)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as storage:
        for run in range(1, args.runs + 1):
            began = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "service", "bench", "--preset",
                                   "cpu-small", "--backbones", "vgg17", "--storage", storage],
                                  capture_output=True, text=True, cwd=ROOT, env=env)
            exit_s = time.perf_counter() - began
            out = subprocess.run([sys.executable, "-c", TO_RAY_INIT, storage],
                                 capture_output=True, text=True, cwd=ROOT, env=env,
                                 check=True).stdout.split()
            print(f"run {run}: exit {done.returncode} in {exit_s:.2f} s; ray.init after "
                  f"{out[0]} s, torch imported: {out[1]}")
    evaluation()


def evaluation() -> None:
    import torch

    from service.training.backbones import build_backbone
    from service.training.data import load_splits

    torch.set_num_threads(1)
    splits = load_splits("digits", image_size=32, seed=0)
    model = build_backbone("vgg16@0.25", num_classes=splits.num_classes,
                           in_channels=splits.in_channels, image_size=32).eval()
    model = model.to(memory_format=torch.channels_last)
    x = splits.val_x.contiguous(memory_format=torch.channels_last)

    def one_pass() -> None:
        with torch.no_grad():
            for i in range(0, x.shape[0], 128):
                model(x[i:i + 128])

    one_pass()
    best = min(_timed(one_pass) for _ in range(5))
    with torch.profiler.profile() as prof:
        one_pass()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"evaluation: {x.shape[0]} images in {best:.3f} s (best of 5)")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:5]:
        print(f"  {e.key}: {100 * e.self_cpu_time_total / total:.0f}%")


def _timed(fn) -> float:  # noqa: ANN001
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
