"""Every cluster config parses, runs the pinned project, keeps token auth on and the
dashboard on 127.0.0.1."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PINS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _pin(package: str) -> str:
    return next(p for p in PINS if p.split("==")[0].split("[")[0] == package)


def test_launcher_config() -> None:
    config = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] >= 1 and worker["max_workers"] > worker["min_workers"]
    setup = " ".join(config["setup_commands"])
    assert _pin("torch") in setup and _pin("torchvision") in setup
    assert "pip install -q -e ~/emerald-tune" in setup  # the project's own pinned deps
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"])
    assert not any("ray stop" in c for c in config["head_start_ray_commands"]
                   + config["worker_start_ray_commands"])


def test_kuberay_raycluster() -> None:
    doc = yaml.safe_load((ROOT / "cluster" / "kuberay" / "raycluster.yaml").read_text())
    assert doc["kind"] == "RayCluster"
    assert doc["spec"]["rayVersion"] == _pin("ray").split("==")[1]
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    groups = doc["spec"]["workerGroupSpecs"]
    gpu = groups[0]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"][
        "nvidia.com/gpu"]
    for container in [head["template"]["spec"]["containers"][0], gpu]:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert container["image"].startswith("rayproject/ray:2.60.0")
