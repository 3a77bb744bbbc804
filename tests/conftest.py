"""Shared fixtures: one local Ray instance for the whole session, always shut down."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """`address="local"` never joins another Ray instance running on the machine. Two
    logical GPUs let tests check GPU scheduling without hardware."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
