"""Shared fixtures: one local Ray instance for the whole session, always shut down."""

from __future__ import annotations

import os
import time

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")

RAY_ARGS = {"address": "local", "num_cpus": 2, "num_gpus": 2, "include_dashboard": False,
            "log_to_driver": False, "configure_logging": False}
"""`address="local"` never joins another Ray instance running on the machine. Two logical
GPUs let tests check GPU scheduling without hardware."""


SLOW_FILES = ("test_cluster_local.py", "test_faults.py", "test_report_browser.py",
              "test_dashboard_browser.py",
              "test_resume.py", "test_docs_dropin.py")
"""Files that start Ray clusters, kill processes or drive a browser: full suite only."""


def pytest_collection_modifyitems(config, items) -> None:
    """The full suite's tier: every test that uses the session's Ray or lives in
    `SLOW_FILES` is marked `slow`; `make test-fast` runs the others (`-m "not slow"`)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) or \
                item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(**RAY_ARGS)
    try:
        yield ray
    finally:
        ray.shutdown()


def held_resources(ray) -> dict[str, float]:
    """CPUs and GPUs of the session that something still holds."""
    total, free = ray.cluster_resources(), ray.available_resources()
    return {k: total.get(k, 0) - free.get(k, 0) for k in ("CPU", "GPU")
            if total.get(k, 0) - free.get(k, 0) > 1e-9}


@pytest.fixture(autouse=True)
def _ray_left_empty(request):
    """Every test that uses the session's Ray gives back all its CPUs and GPUs: one that
    leaves some held (seen once in CI: a trial's CPU after a BOHB run) fails, naming what
    holds them, and the session's Ray is restarted for the tests after it (a leak would
    otherwise serialise every later experiment)."""
    yield
    if "ray_session" not in request.fixturenames:
        return
    ray = request.getfixturevalue("ray_session")
    deadline = time.time() + 15
    while held_resources(ray) and time.time() < deadline:
        time.sleep(0.2)
    held = held_resources(ray)
    if held:
        from ray._private.state import actors as actor_table
        from ray.util import placement_group_table

        # Read from the GCS: the state API needs the dashboard, which tests do not start.
        actors = [(a.get("ActorClassName"), a.get("State")) for a in actor_table().values()
                  if a.get("State") != "DEAD"]
        groups = [(pg_id[:8], g.get("state")) for pg_id, g in placement_group_table().items()
                  if g.get("state") != "REMOVED"]
        ray.shutdown()
        ray.init(**RAY_ARGS)
        pytest.fail(f"{request.node.name} left {held} of the session's Ray held (actors "
                    f"{actors}, placement groups {groups}); Ray restarted", pytrace=False)
