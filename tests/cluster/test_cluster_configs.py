"""Every cluster config parses, runs the pinned project and keeps token auth on. The VM
launcher binds the dashboard to 127.0.0.1 (SSH tunnel); the KubeRay heads listen on the pod
network for the operator, behind token auth, a ClusterIP Service and a NetworkPolicy."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
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


KUBERAY = ROOT / "cluster" / "kuberay"
DASHBOARD_PORT = 8265
TOKEN_ENV = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def _containers(cluster_spec: dict) -> dict[str, dict]:
    """Every container (init ones too) of the head and worker templates, by role/name."""
    groups = [("head", cluster_spec["headGroupSpec"])] + [
        (f"worker:{g['groupName']}", g) for g in cluster_spec["workerGroupSpecs"]]
    return {f"{role}/{c['name']}": c for role, group in groups
            for c in group["template"]["spec"]["containers"]
            + group["template"]["spec"].get("initContainers", [])}


def _pod_labels(cluster_name: str, node_type: str, group: dict) -> dict[str, str]:
    """The labels KubeRay gives a head or worker pod: its own ones plus the template's."""
    labels = dict(group["template"].get("metadata", {}).get("labels", {}))
    labels.update({"ray.io/cluster": cluster_name, "ray.io/node-type": node_type,
                   "ray.io/is-ray-node": "yes"})
    return labels


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions to evaluate
    return selector["matchLabels"].items() <= labels.items()


def _assert_token_auth_by_operator(cluster_spec: dict, extra: dict[str, dict]) -> None:
    """authOptions mode token, and no hand-written token env anywhere: the operator only
    injects RAY_AUTH_* where the variable is absent, so a hand-written one would win."""
    assert cluster_spec["authOptions"] == {"mode": "token"}
    containers = _containers(cluster_spec) | extra
    assert containers
    for name, container in containers.items():
        assert not TOKEN_ENV & {e["name"] for e in container.get("env", [])}, name
    assert not TOKEN_ENV & {e["name"] for e in
                            cluster_spec.get("autoscalerOptions", {}).get("env", [])}


def _assert_head_not_exposed(cluster_spec: dict, docs: list[dict]) -> None:
    head = cluster_spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the operator must reach it
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert not {"Ingress", "Service", "Secret"} & {d["kind"] for d in docs}


def _assert_head_policy(docs: list[dict], cluster_name: str, cluster_spec: dict,
                        port_8265_peers: list[dict]) -> None:
    """A NetworkPolicy selects this cluster's head pod (and no worker), admits all ports
    from pods of the same Ray cluster only, and 8265 from exactly `port_8265_peers`."""
    policy = _one(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert "namespace" not in policy["metadata"]  # lands next to the Ray pods
    head = _pod_labels(cluster_name, "head", cluster_spec["headGroupSpec"])
    workers = [_pod_labels(cluster_name, "worker", g) for g in cluster_spec["workerGroupSpecs"]]
    assert _matches(spec["podSelector"], head)
    assert not any(_matches(spec["podSelector"], w) for w in workers)
    assert "Ingress" in spec["policyTypes"]
    cluster_rules, port_rules = [], []
    for rule in spec["ingress"]:
        assert rule.get("from"), rule  # an empty `from` admits every source
        assert not any("ipBlock" in peer for peer in rule["from"]), rule
        if "ports" in rule:
            assert rule["ports"] == [{"port": DASHBOARD_PORT, "protocol": "TCP"}], rule
            port_rules += rule["from"]
        else:  # all ports: only pods of this very Ray cluster
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, peer
                assert all(_matches(peer["podSelector"], p) for p in [head, *workers]), peer
                assert not _matches(peer["podSelector"],
                                    _pod_labels("some-other-cluster", "worker", {"template": {}}))
                cluster_rules.append(peer)
    assert cluster_rules, "workers must reach the head's GCS and other Ray ports"
    assert sorted(map(str, port_rules)) == sorted(map(str, port_8265_peers))


OPERATOR_PEER = {  # the kuberay-operator Helm chart's pods, in the namespace it was installed to
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "default"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
}


def test_kuberay_raycluster() -> None:
    docs = _docs(KUBERAY / "raycluster.yaml")
    doc = _one(docs, "RayCluster")
    spec = doc["spec"]
    assert spec["rayVersion"] == _pin("ray").split("==")[1]
    groups = spec["workerGroupSpecs"]
    gpu = groups[0]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"][
        "nvidia.com/gpu"]
    for container in _containers(spec).values():
        assert container["image"].startswith("rayproject/ray:2.60.0")
    _assert_token_auth_by_operator(spec, {})
    _assert_head_not_exposed(spec, docs)
    _assert_head_policy(docs, doc["metadata"]["name"], spec, [OPERATOR_PEER])
    # the Secret the operator creates is named after the cluster; the header reads it
    assert (f"kubectl get secret {doc['metadata']['name']} -o jsonpath='{{.data.auth_token}}'"
            in (KUBERAY / "raycluster.yaml").read_text())


RAYJOB = ROOT / "cluster" / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
PROJECT_IN_IMAGE = "/home/ray/emerald-tune"


def _rayjob() -> tuple[dict, dict]:
    docs = _docs(RAYJOB)
    return _one(docs, "RayJob"), _one(docs, "PersistentVolumeClaim")


def _pods(job: dict) -> dict[str, dict]:
    """Pod specs by role: head, each worker group, the submitter."""
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"],
            "submitter": job["spec"]["submitterPodTemplate"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[f"worker:{group['groupName']}"] = group["template"]["spec"]
    return pods


def _entrypoint_config(job: dict) -> Path:
    """The repository file behind the RayJob's `--config` path inside the image."""
    import shlex

    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:5] == ["python", "-m", "service", "run", "--config"] and len(args) == 6
    assert args[5].startswith(PROJECT_IN_IMAGE + "/")
    return ROOT / Path(args[5]).relative_to(PROJECT_IN_IMAGE)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    lines = [line for line in dockerfile.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    joined = " ".join(line.rstrip()[:-1] if line.rstrip().endswith("\\") else line + "\n"
                      for line in lines)
    return [(parts[0].upper(), " ".join(parts[1:])) for parts in
            (line.split() for line in joined.splitlines()) if parts]


def test_dockerfile_installs_the_pinned_project() -> None:
    steps = _instructions(DOCKERFILE)
    ray_version = _pin("ray").split("==")[1]
    assert steps[0] == ("FROM", f"rayproject/ray:{ray_version}-py311-gpu")
    assert any(op == "COPY" and args.endswith(f" . {PROJECT_IN_IMAGE}") for op, args in steps)
    run = next(args for op, args in steps if op == "RUN")
    torch_step, project_step = run.split("&&")[:2]
    assert _pin("torch") in torch_step.split() and _pin("torchvision") in torch_step.split()
    assert project_step.split()[-1] == PROJECT_IN_IMAGE and " -e " not in f" {project_step} "
    ignore = (ROOT / "cluster" / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and "results" in ignore


def test_kuberay_rayjob_runs_the_real_entrypoint() -> None:
    from service.core.config import load_config

    job, _ = _rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["spec"]["shutdownAfterJobFinishes"] is True
    config_file = _entrypoint_config(job)
    assert config_file.is_file(), config_file
    cfg = load_config(config_file)  # validates, as `python -m service run --config` does
    assert Path(cfg.storage).is_absolute()
    # the preset the YAML stands for, except where the cluster needs its own paths
    from service.core.presets import get_preset

    preset = get_preset("table9-gpu")
    for key in ("backbones", "searchers", "seeds", "concurrency"):
        assert getattr(cfg, key) == preset[key], key
    # every Table 9 row: both EMERALD-O entries and random search ("Additional Tools")
    assert {"emerald", "emerald-dynamic", "random"} <= set(cfg.searchers)
    assert cfg.budget.model_dump(exclude_none=True) == preset["budget"]
    assert cfg.resources.model_dump() == {k: float(v) for k, v in preset["resources"].items()}
    assert cfg.dataset.name == preset["dataset"]["name"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["RAY_AIR_NEW_OUTPUT"] == "0" and env["PYTHONUNBUFFERED"] == "1"


def test_kuberay_rayjob_image_matches_dockerfile_and_pins() -> None:
    job, _ = _rayjob()
    ray_version = _pin("ray").split("==")[1]
    torch_version = _pin("torch").split("==")[1]
    image = f"emerald-tune:{ray_version}-torch{torch_version}"
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
    for role, pod in _pods(job).items():
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == image, (role, container["name"])
    assert f"docker build -f cluster/Dockerfile -t {image} ." in DOCKERFILE.read_text()
    assert f"docker build -f cluster/Dockerfile -t {image} ." in RAYJOB.read_text()


def test_kuberay_rayjob_security_and_resources() -> None:
    docs = _docs(RAYJOB)
    job = _one(docs, "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    submitter = job["spec"]["submitterPodTemplate"]
    assert job["spec"].get("submissionMode", "K8sJobMode") == "K8sJobMode"
    _assert_token_auth_by_operator(
        cluster, {f"submitter/{c['name']}": c for c in submitter["spec"]["containers"]})
    _assert_head_not_exposed(cluster, docs)
    # the RayJob's cluster name is generated: a policy keyed on a fixed ray.io/cluster value
    # would select nothing, so check it against a name the manifest cannot know
    _assert_head_policy(docs, f"{job['metadata']['name']}-x7k2q", cluster, [
        OPERATOR_PEER, {"podSelector": {"matchLabels": submitter["metadata"]["labels"]}}])
    text = RAYJOB.read_text()
    assert ".status.rayClusterName" in text
    assert "kubectl get secret $CLUSTER -o jsonpath='{.data.auth_token}'" in text
    assert cluster["enableInTreeAutoscaling"] is True
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["maxReplicas"] > g["minReplicas"] for g in groups)
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert resources["requests"] == resources["limits"]
            assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
            assert group["rayStartParams"]["num-gpus"] == resources["limits"]["nvidia.com/gpu"]


def test_kuberay_rayjob_shares_the_storage_path() -> None:
    from service.core.config import load_config

    job, pvc = _rayjob()
    cfg = load_config(_entrypoint_config(job))
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    assert Path(cfg.dataset.root).is_relative_to(cfg.storage)  # data on the same volume
    for role, pod in _pods(job).items():
        if role == "submitter":  # runs `ray job submit` only
            continue
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert claims.get(mounts.get(cfg.storage)) == pvc["metadata"]["name"], role


@pytest.mark.parametrize("name", ["cifar10", "fashion"])
def test_optsel_gpu_experiment_files_are_their_presets(name: str) -> None:
    """Pham's GPU setting for the RayJob: the preset, with the volume's paths."""
    from service.core.config import load_config
    from service.core.presets import get_preset

    cfg = load_config(ROOT / "cluster" / "experiments" / f"gpu-optsel-{name}.yaml")
    preset = load_config(preset=f"optsel-gpu-{name}")
    for key in ("name", "backbones", "searchers", "searcher_options", "seeds", "space",
                "budget", "resources", "concurrency"):
        assert getattr(cfg, key) == getattr(preset, key), key
    assert cfg.dataset.name == preset.dataset.name and cfg.storage == "/mnt/results"
    assert cfg.dataset.root.startswith("/mnt/results/")
    assert cfg.backbones == ["resnet18_imagenet"] and cfg.budget.epochs == 100
    assert get_preset(f"optsel-gpu-{name}")["resources"]["gpus"] == 1


def test_layerwise_gpu_experiment_file_is_its_preset() -> None:
    """Iranfar et al.'s GPU setting for the RayJob: the preset, with the volume's paths."""
    from service.core.config import load_config

    cfg = load_config(ROOT / "cluster" / "experiments" / "gpu-layerwise-cifar100.yaml")
    preset = load_config(preset="layerwise-gpu-cifar100")
    for key in ("name", "backbones", "searchers", "searcher_options", "seeds", "space",
                "budget", "resources", "concurrency", "metric", "reward", "termination"):
        assert getattr(cfg, key) == getattr(preset, key), key
    assert cfg.dataset.name == "cifar100" and cfg.storage == "/mnt/results"
    assert cfg.dataset.root.startswith("/mnt/results/")
