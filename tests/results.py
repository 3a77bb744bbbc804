"""Reading what trials reported, straight from the storage path (tests of runs in other
processes and on other nodes cannot hold Tune's ResultGrid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def trial_rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Result rows (one per reported epoch) of every trial in `folder`, a cell or an
    experiment folder, by trial folder name. Trials that have not reported yet, and trials
    set aside under `.orphaned/`, are left out."""
    out = {}
    for path in [*folder.glob("trial_*/result.json"),
                 *folder.glob("*__*__s*/trial_*/result.json")]:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[path.parent.name] = rows
    return out


def sigkill_driver(driver: Any) -> list[str]:
    """SIGKILL a driver process started with `start_new_session=True` and wait for the
    embedded Ray it started (GCS, raylet and trial workers share its fate); returns the
    names of processes other than Ray's agents that outlived it. The agents (dashboard and
    runtime-env) never end on their own after their raylet dies: they are ended here once
    the rest has, instead of waiting the full 30 s for them."""
    import os
    import signal

    import psutil

    family = psutil.Process(driver.pid).children(recursive=True)
    names = {p.pid: p.name() for p in family}
    agents = [p for p in family if "Agent" in names[p.pid]]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs([p for p in family if p not in agents], timeout=30)
    for process in alive + agents:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return [names[p.pid] for p in alive]
