"""Start and stop a local multi-node Ray cluster on loopback, for tests and trying things out.

Each node is one `ray start --block` process on 127.0.0.1 with logical CPUs and GPUs (Ray
schedules logical GPUs without hardware), its own free ports and its own temp dir, so it
never touches another Ray instance on the machine. Token authentication is on, with a token
file of this cluster's own (RAY_AUTH_TOKEN_PATH); the dashboard listens on 127.0.0.1 only.
Nodes are stopped by the process ids this script started (never `ray stop`, which ends every
Ray process on the machine, other people's included).

    python -m cluster.local_cluster start --dir /tmp/emerald-cluster --nodes 2 --gpus 1
    eval "$(python -m cluster.local_cluster env --dir /tmp/emerald-cluster)"
    ray job submit --working-dir . -- python -m service run --preset smoke
    python -m cluster.local_cluster stop --dir /tmp/emerald-cluster
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
LOOPBACK = "127.0.0.1"
FAST_FAILURE_DETECTION = {
    # A lost node is declared dead after ~3 s instead of Ray's default ~15-30 s, so fault
    # tests on a laptop finish quickly. Applied to this local cluster only.
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "1000",
}


class ClusterError(RuntimeError):
    """The local cluster could not be started, found or stopped."""


PORT_RANGE = (20000, 32000)
"""Below Linux's ephemeral range (32768+), so a port chosen here is not handed to some
other socket by the OS between choosing it and the Ray process binding it."""
_given: set[int] = set()


def free_port() -> int:
    """A TCP port free on all interfaces, never handed out twice by this process."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*PORT_RANGE)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise ClusterError(f"no free TCP port in {PORT_RANGE}")


def _ray_executable() -> str:
    """The `ray` CLI of the Python running this script (the project's venv)."""
    candidate = Path(sys.executable).with_name("ray")
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if not found:
        raise ClusterError("ray: the Ray CLI is not installed; run `make setup` first")
    return found


@dataclass
class NodeInfo:
    """One started node: its name, the pid of its `ray start --block` process, its log."""

    name: str
    pid: int
    cpus: int
    gpus: int
    log: str


@dataclass
class ClusterState:
    """What `start` wrote and `env`/`stop` read back (cluster.json in the cluster folder)."""

    folder: str
    gcs_address: str
    dashboard_url: str
    token_path: str
    nodes: list[NodeInfo] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.folder) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, folder: str | Path) -> ClusterState:
        path = Path(folder) / STATE_FILE
        if not path.exists():
            raise ClusterError(f"dir: {str(folder)!r} holds no {STATE_FILE}; start a cluster "
                               "there first (local_cluster.py start --dir ...)")
        raw = json.loads(path.read_text())
        raw["nodes"] = [NodeInfo(**n) for n in raw["nodes"]]
        return cls(**raw)

    def client_env(self) -> dict[str, str]:
        """Environment a client needs: token auth on, this cluster's token, its addresses
        (RAY_ADDRESS for drivers, RAY_API_SERVER_ADDRESS for `ray job submit`)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path,
                "RAY_ADDRESS": self.gcs_address, "RAY_API_SERVER_ADDRESS": self.dashboard_url}

    def token(self) -> str:
        return Path(self.token_path).read_text().strip()


def _node_env(token_path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS")}
    env.update(FAST_FAILURE_DETECTION)
    # Job entrypoints (`python -m service ...`) run with the nodes' PATH: the project's Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path,
               RAY_USAGE_STATS_ENABLED="0")
    return env


def _node_command(temp_dir: Path, cpus: int, gpus: int, head_port: int | None,
                  dashboard_port: int | None) -> list[str]:
    """`ray start --block` for one node; every port is explicit or OS-picked (0) so two
    nodes (and other Ray instances) on one machine never collide."""
    cmd = [_ray_executable(), "start", "--block", f"--node-ip-address={LOOPBACK}",
           f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--temp-dir={temp_dir}",
           "--min-worker-port=0", "--max-worker-port=0", "--node-manager-port=0",
           "--object-manager-port=0", f"--metrics-export-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}",
           "--object-store-memory=200000000", "--disable-usage-stats"]
    if dashboard_port is not None:
        cmd += ["--head", f"--port={head_port}", f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={free_port()}"]
    else:
        cmd += [f"--address={LOOPBACK}:{head_port}"]
    return cmd


def _http_get(url: str, token: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status code and body of a GET, with the bearer token when given."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def alive_nodes(state: ClusterState) -> list[dict[str, Any]]:
    """The cluster's alive nodes as the dashboard reports them (token-authenticated)."""
    status, body = _http_get(f"{state.dashboard_url}/nodes?view=summary", state.token())
    if status != 200:
        return []
    summary = json.loads(body).get("data", {}).get("summary", [])
    return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]


def _wait(predicate: Any, timeout: float, what: str, logs: Sequence[str]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    tails = "\n".join(f"--- {log}\n" + Path(log).read_text()[-2000:]
                      for log in logs if Path(log).exists())
    raise ClusterError(f"{what} within {timeout:.0f} s\n{tails}")


def start(folder: str | Path, nodes: int = 2, cpus: int = 2, gpus: int = 1,
          timeout: float = 120.0) -> ClusterState:
    """Start a head and `nodes - 1` workers under `folder`; return once all are alive."""
    if nodes < 1:
        raise ClusterError(f"nodes: {nodes} is not a node count; give 1 or more")
    folder = Path(folder).resolve()
    if (folder / STATE_FILE).exists():
        raise ClusterError(f"dir: {str(folder)!r} already holds a cluster; stop it first "
                           "(local_cluster.py stop --dir ...)")
    folder.mkdir(parents=True, exist_ok=True)
    token_path = folder / TOKEN_FILE
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    head_port, dashboard_port = free_port(), free_port()
    state = ClusterState(folder=str(folder), gcs_address=f"{LOOPBACK}:{head_port}",
                         dashboard_url=f"http://{LOOPBACK}:{dashboard_port}",
                         token_path=str(token_path))
    env = _node_env(str(token_path))
    try:
        for index in range(nodes):
            name = "head" if index == 0 else f"worker-{index}"
            # Ray caps socket paths at 107 bytes: keep each node's temp dir short.
            temp_dir = folder / name
            temp_dir.mkdir(exist_ok=True)
            log = str(folder / f"{name}.log")
            cmd = _node_command(temp_dir, cpus, gpus, head_port,
                                dashboard_port if index == 0 else None)
            with open(log, "w") as out:
                process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            state.nodes.append(NodeInfo(name, process.pid, cpus, gpus, log))
            state.save()
            logs = [n.log for n in state.nodes]
            _wait(lambda n=index + 1: len(alive_nodes(state)) >= n, timeout,
                  f"node {name} did not come up", logs)
    except BaseException:
        stop(folder)
        raise
    return state


def _process_tree(pid: int) -> list[Any]:
    """A process and all its descendants (the node's GCS, raylet, agents and workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tagged_processes(temp_dir: Path) -> list[Any]:
    """Processes whose command line names this node's temp dir: ours, even if a parent died
    and they were re-parented."""
    import psutil

    marker = str(temp_dir)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_node(state: ClusterState, name: str, *, kill: bool = False,
              timeout: float = 5.0) -> int:
    """Stop one node by the processes it started; SIGKILL at once with `kill` (a lost
    machine), else SIGTERM then SIGKILL after `timeout` s. Returns how many were signalled."""
    import psutil

    node = next((n for n in state.nodes if n.name == name), None)
    if node is None:
        names = ", ".join(n.name for n in state.nodes)
        raise ClusterError(f"node: no node {name!r} in this cluster; choose one of {names}")
    temp_dir = Path(state.folder) / name
    procs = {p.pid: p for p in _process_tree(node.pid) + _tagged_processes(temp_dir)}
    for process in procs.values():
        try:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(procs.values()), timeout=0 if kill else timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def stop(folder: str | Path) -> None:
    """Stop every node of the cluster in `folder` (workers first) and forget it."""
    folder = Path(folder).resolve()
    try:
        state = ClusterState.load(folder)
    except ClusterError:
        return
    for node in reversed(state.nodes):
        stop_node(state, node.name)
    (folder / STATE_FILE).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "env", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, help="the cluster's own folder")
        if name == "start":
            p.add_argument("--nodes", type=int, default=2, help="head + workers")
            p.add_argument("--cpus", type=int, default=2, help="logical CPUs per node")
            p.add_argument("--gpus", type=int, default=1, help="logical GPUs per node")
        if name == "stop":
            p.add_argument("--node", help="stop only this node (e.g. worker-1)")
            p.add_argument("--kill", action="store_true", help="SIGKILL, like a lost machine")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            state = start(args.dir, args.nodes, args.cpus, args.gpus)
            print(f"started {len(state.nodes)} nodes: GCS {state.gcs_address}, dashboard "
                  f"{state.dashboard_url} (token auth on, token in {state.token_path})")
            print(f'clients: eval "$(python -m cluster.local_cluster env --dir {args.dir})"')
        elif args.command == "stop":
            if args.node:
                stop_node(ClusterState.load(args.dir), args.node, kill=args.kill)
            else:
                stop(args.dir)
        elif args.command == "env":
            for key, value in ClusterState.load(args.dir).client_env().items():
                print(f"export {key}={value}")
        else:
            state = ClusterState.load(args.dir)
            for node in alive_nodes(state):
                resources = node.get("raylet", {}).get("resourcesTotal", {})
                print(node.get("raylet", {}).get("nodeId"), resources)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
