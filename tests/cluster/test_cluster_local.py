"""On a local two-node cluster (cluster/local_cluster.py: head + worker on loopback, one
logical GPU each, token auth on): the Jobs API refuses requests without the right token,
`ray job submit` runs the real entrypoint, a bench run packs two 0.5-GPU trials per GPU on
both nodes into one storage path, and losing the worker node mid-run loses no trial.

The node-loss test kills the worker node, so it stays the last test of this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cluster import local_cluster as lc
from tests.results import trial_rows

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # A short path: Ray's socket paths under the temp dir must stay below 107 bytes.
    folder = Path(f"/tmp/emerald-test-{os.getpid()}")
    state = lc.start(folder, nodes=2, cpus=2, gpus=1)
    try:
        yield state
    finally:
        lc.stop(folder)
        assert not lc._tagged_processes(folder), "processes of the test cluster survived"
        shutil.rmtree(folder, ignore_errors=True)  # its logs stay only when that failed


def _client_env(state: lc.ClusterState) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(state.client_env())
    env["RAY_AIR_NEW_OUTPUT"] = "0"
    return env


def _head_id(state: lc.ClusterState) -> str:
    for node in lc.alive_nodes(state):
        raylet = node["raylet"]
        if "node:__internal_head__" in raylet.get("resourcesTotal", {}) or raylet.get(
                "isHeadNode"):
            return raylet["nodeId"]
    raise AssertionError("no head node alive")


def _bench(state: lc.ClusterState, storage: Path, name: str, *, epochs: int,
           image_size: int) -> subprocess.Popen:
    """Four trials of 1 CPU + 0.5 GPU at once; one actor per trial (no reuse) so all four
    start together instead of two actors taking turns."""
    cmd = [sys.executable, "-m", "service", "run", "--preset", "smoke", "--name", name,
           "--storage", str(storage), "--trials", "4", "--epochs", str(epochs),
           "--concurrency", "4", "--cpus-per-trial", "1", "--gpus-per-trial", "0.5",
           "--set", "dataset.max_train=600", "--set", f"dataset.image_size={image_size}",
           "--set", "reuse_actors=false", "--set", "final_test=false"]
    return subprocess.Popen(cmd, cwd=ROOT, env=_client_env(state), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_jobs_api_needs_the_token(cluster: lc.ClusterState) -> None:
    url = f"{cluster.dashboard_url}/api/jobs/"
    status, _ = lc._http_get(url, None)
    assert status == 401
    status, _ = lc._http_get(url, "not-the-token")
    assert status in (401, 403)  # Ray 2.60 answers 403 Forbidden for a wrong token
    status, body = lc._http_get(url, cluster.token())
    assert status == 200 and isinstance(json.loads(body), list)


def test_cluster_sockets_refuse_callers_without_the_token(cluster: lc.ClusterState) -> None:
    """Nodes of a cluster must reach each other, so Ray binds most ports to every interface
    (docs/security.md): each gRPC service refuses a call with no token, each HTTP port but the
    metrics and the dashboard's static page answers 401, and the dashboard binds to loopback."""
    from service.backends.tune.sockets import listening_sockets

    rows = [row for node in cluster.nodes for row in listening_sockets(node.pid)]
    assert {"GCS server", "raylet", "dashboard agent", "dashboard (head)"} <= {
        r.role for r in rows}
    for r in rows:
        if r.answer.startswith("gRPC"):
            assert not r.answer.endswith("answered"), r
        elif r.answer.startswith("HTTP"):
            assert r.answer in ("HTTP 401", "HTTP 200: Prometheus metrics",
                                "HTTP 200: HTML page"), r
    port = int(cluster.dashboard_url.rsplit(":", 1)[1])
    assert {r.interface for r in rows if r.port == port} == {"loopback"}


def test_half_gpu_trials_pack_two_per_gpu_on_both_nodes(cluster: lc.ClusterState,
                                                        tmp_path: Path) -> None:
    proc = _bench(cluster, tmp_path, "pack", epochs=3, image_size=32)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    trials = trial_rows(tmp_path / "pack")
    assert len(trials) == 4
    per_gpu: dict[tuple[str, str], list[list[dict[str, Any]]]] = defaultdict(list)
    for rows in trials.values():
        assert [r["training_iteration"] for r in rows] == [1, 2, 3]
        assert {(r["node_id"], r["gpu_ids"]) for r in rows} == {(rows[0]["node_id"],
                                                                 rows[0]["gpu_ids"])}
        per_gpu[(rows[0]["node_id"], rows[0]["gpu_ids"])].append(rows)
    # Both nodes, one logical GPU each, two trials sharing each GPU at the same time.
    assert len({node for node, _ in per_gpu}) == 2
    assert sorted(len(v) for v in per_gpu.values()) == [2, 2]
    for a, b in per_gpu.values():
        start_a = a[0]["unix_time"] - a[0]["time_this_iter_s"]
        start_b = b[0]["unix_time"] - b[0]["time_this_iter_s"]
        assert max(start_a, start_b) < min(a[-1]["unix_time"], b[-1]["unix_time"])
    # One storage path: the experiment's report sees all four trials.
    assert len((tmp_path / "pack" / "report" / "trials.csv").read_text().splitlines()) == 5


def test_ray_job_submit_runs_the_entrypoint(cluster: lc.ClusterState, tmp_path: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--working-dir", ".",
           "--", "python", "-m", "service", "run", "--preset", "smoke", "--name", "job",
           "--storage", str(tmp_path), "--set", "final_test=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_client_env(cluster), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert len(trial_rows(tmp_path / "job")) == 2
    # Without the token the same submission is refused before anything runs.
    env = _client_env(cluster)
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "wrong_token")
    (tmp_path / "wrong_token").write_text("0" * 64)
    refused = subprocess.run(cmd[:-2] + ["refused", "--storage", str(tmp_path)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert not (tmp_path / "refused").exists()


def test_losing_the_worker_node_loses_no_trial(cluster: lc.ClusterState,
                                               tmp_path: Path) -> None:
    """SIGKILL every process of the worker node while its trials train: they fail, are
    retried from their last checkpoint on the head, and the experiment completes."""
    head = _head_id(cluster)
    epochs = 8
    proc = _bench(cluster, tmp_path, "loss", epochs=epochs, image_size=32)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 300
    killed_at: dict[str, int] = {}
    while time.time() < deadline and proc.poll() is None:
        on_worker = {path: rows[-1]["training_iteration"]
                     for path, rows in trial_rows(tmp_path / "loss").items()
                     if rows[-1]["node_id"] != head}
        # Both worker trials mid-run, with epochs to spare: none can finish before the kill.
        if len(on_worker) == 2 and all(2 <= e <= epochs - 3 for e in on_worker.values()):
            lc.stop_node(cluster, "worker-1", kill=True)
            killed_at = on_worker
            break
        time.sleep(0.2)
    assert killed_at, "no trial ran on the worker node"
    proc.wait(timeout=600)
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(output)[-3000:]
    trials = trial_rows(tmp_path / "loss")
    assert len(trials) == 4
    for path, rows in trials.items():
        assert rows[-1]["training_iteration"] == epochs and rows[-1]["epoch"] == epochs
        if path in killed_at:
            lost = [r for r in rows if r["node_id"] != head]
            moved = [r for r in rows if r["node_id"] == head]
            assert lost and moved, "a trial of the lost node did not move to the head"
            # Resumed from the checkpoint of its last reported epoch, not from scratch.
            assert moved[0]["epoch"] == lost[-1]["epoch"] + 1 >= 3
