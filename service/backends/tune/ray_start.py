"""Joining Ray: the cluster a command names, or an embedded local Ray bound to loopback; a
cluster that has no node to hold one trial is left before any trial starts. Ray is imported
only when a command gets this far (a bad config fails without it)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

from service.core.config import ConfigError, ExperimentConfig

LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for single-node platforms: off, Ray takes 127.0.0.1 as the node's address, so
every socket of the embedded local Ray binds to loopback (`python -m service sockets`)."""


def bind_loopback() -> None:
    """Make the embedded local Ray bind to loopback: `ray.init` offers no argument for it (it
    turns a given 127.0.0.1 into the machine's address), so set Ray's own single-node switch,
    in this process and for every process Ray starts. A cluster (`--address`) is unaffected."""
    os.environ[LOOPBACK_ONLY_ENV] = "0"
    from service.backends.tune.ray_compat import single_node_ray

    single_node_ray()


def cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray cluster a command joins (--address, else RAY_ADDRESS), None for the embedded
    local Ray."""
    return args.address or os.environ.get("RAY_ADDRESS") or None


def init_ray(args: argparse.Namespace, cfg: ExperimentConfig | None = None) -> None:
    """Join the cluster named by --address or RAY_ADDRESS; otherwise start a local Ray that
    never joins another instance on the machine. With `cfg`, a cluster that has no node
    to hold one trial is left at once (ConfigError, before any trial or folder)."""
    import ray

    address = cluster_address(args)
    verbose = bool(getattr(args, "verbose", False))
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
        if cfg is not None:
            try:
                problem = trial_fits(cfg, ray.nodes())
            except Exception:
                ray.shutdown()
                raise
            if problem:
                ray.shutdown()
                raise ConfigError(f"{problem} at {address}")
    else:
        bind_loopback()
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                 include_dashboard=False, **quiet)


def trial_fits(cfg: ExperimentConfig, nodes: Sequence[dict[str, Any]]) -> str | None:
    """Why no alive node of a cluster (`ray.nodes()`) can hold one trial, or None. A trial's
    CPUs and GPUs come from one node; one that fits none would wait forever in Tune."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive", n.get("alive"))]
    need = {"CPU": cfg.resources.cpus, "GPU": cfg.resources.gpus}
    if any(all(r.get(k, 0.0) >= v for k, v in need.items() if v) for r in alive):
        return None
    best = {k: max((r.get(k, 0.0) for r in alive), default=0.0) for k in need}
    key = "CPU" if best["CPU"] < need["CPU"] else "GPU"
    field, flag = ("cpus", "--cpus-per-trial") if key == "CPU" else ("gpus", "--gpus-per-trial")
    return (f"resources.{field}: {need[key]:g} {key}s per trial, but no node of the cluster "
            f"has more than {best[key]:g}; give at most {best[key]:g} ({flag}) or add a node "
            "that has them")
