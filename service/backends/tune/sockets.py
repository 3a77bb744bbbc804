"""Which sockets a Ray run opens: each listening socket of a process tree, its interface, and
what an unauthenticated request from this machine gets back.

`python -m service sockets` starts the embedded local Ray exactly as `run` does and prints the
table; docs/security.md is written from it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

PROBE = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
"""The unauthenticated request: a bare HTTP GET with no token, the cheapest thing anyone on
the machine can send."""

_ROLES = (
    # (substring of the command line, role); first match wins
    ("gcs_server", "GCS server"),
    ("raylet", "raylet"),
    ("ray::DashboardAgent", "dashboard agent"),
    ("ray::RuntimeEnvAgent", "runtime-env agent"),
    ("dashboard/dashboard.py", "dashboard (head)"),
    ("autoscaler/_private/monitor.py", "autoscaler monitor"),
    ("ray.util.client.server", "Ray Client server"),
    ("ray::", "worker"),
    ("ray start", "ray start"),
)


@dataclass(frozen=True)
class ListeningSocket:
    """One listening TCP socket of the tree, and what a bare request to it got."""

    pid: int
    role: str
    address: str
    port: int
    interface: str  # loopback | all interfaces | <address>
    answer: str

    def row(self) -> str:
        return (f"{self.role:20s} {self.pid:>7d} {self.address + ':' + str(self.port):28s} "
                f"{self.interface:16s} {self.answer}")


def role_of(cmdline: Iterable[str]) -> str:
    """A process's part in Ray, read from its command line (the driver when nothing matches)."""
    text = " ".join(cmdline)
    for needle, role in _ROLES:
        if needle in text:
            return role
    return "driver"


def interface_of(address: str) -> str:
    """loopback, all interfaces (a wildcard bind), or the address itself."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "all interfaces"
    return str(ip)


def probe(address: str, port: int, timeout: float = 2.0) -> str:
    """What a bare HTTP GET with no token gets: `HTTP <status>`, `bytes (not HTTP)`,
    `closed, no answer`, `silent` (nothing within the timeout) or `refused`."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    host = "127.0.0.1" if ip.is_unspecified or ip.is_loopback else str(ip)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(PROBE)
            data = _read_some(conn)
    except TimeoutError:
        return "silent"
    except ConnectionRefusedError:
        return "refused"
    except OSError as err:  # reset by peer and the like: it answered by closing
        return f"closed ({err.__class__.__name__})"
    if not data:
        return "closed, no answer"
    if not data.startswith(b"HTTP/"):
        return grpc_probe(host, port, timeout)
    status = data.split(b" ", 2)[1].decode(errors="replace")
    body = data.partition(b"\r\n\r\n")[2]
    if status == "200" and body.startswith(b"# HELP"):
        return "HTTP 200: Prometheus metrics"
    if status == "200" and body[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "HTTP 200: HTML page"
    return f"HTTP {status}"


def _grpc_calls() -> list[tuple[str, Any]]:
    """One harmless read-only RPC of each Ray gRPC service, sent with no token."""
    from ray.core.generated import core_worker_pb2 as cw
    from ray.core.generated import core_worker_pb2_grpc as cw_grpc
    from ray.core.generated import gcs_service_pb2 as gcs
    from ray.core.generated import gcs_service_pb2_grpc as gcs_grpc
    from ray.core.generated import node_manager_pb2 as nm
    from ray.core.generated import node_manager_pb2_grpc as nm_grpc
    from ray.core.generated import reporter_pb2 as rep
    from ray.core.generated import reporter_pb2_grpc as rep_grpc

    return [
        ("GCS", lambda ch, t: gcs_grpc.NodeInfoGcsServiceStub(ch).GetAllNodeInfo(
            gcs.GetAllNodeInfoRequest(), timeout=t)),
        ("node manager", lambda ch, t: nm_grpc.NodeManagerServiceStub(ch).GetNodeStats(
            nm.GetNodeStatsRequest(), timeout=t)),
        ("core worker", lambda ch, t: cw_grpc.CoreWorkerServiceStub(ch).NumPendingTasks(
            cw.NumPendingTasksRequest(), timeout=t)),
        ("reporter", lambda ch, t: rep_grpc.ReporterServiceStub(ch).HealthCheck(
            rep.HealthCheckRequest(), timeout=t)),
        ("logs", lambda ch, t: rep_grpc.LogServiceStub(ch).ListLogs(
            rep.ListLogsRequest(), timeout=t)),
    ]


def grpc_probe(host: str, port: int, timeout: float = 2.0) -> str:
    """A gRPC port's answer to one read-only call of each Ray service, with no token:
    `gRPC <service>: UNAUTHENTICATED` (token auth refused it), `gRPC <service>: answered`
    (it served a caller with no token), or `gRPC: no Ray service we call` (all UNIMPLEMENTED,
    e.g. the object manager's port)."""
    import grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for service, call in _grpc_calls():
            try:
                call(channel, timeout)
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                return f"gRPC {service}: {code.name}"
            return f"gRPC {service}: answered"
    return "gRPC: no Ray service we call"


def _read_some(conn: socket.socket, limit: int = 8192) -> bytes:
    """The first bytes of the answer: up to `limit`, or until the peer closes or pauses."""
    data = b""
    try:
        while len(data) < limit:
            chunk = conn.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and len(data.partition(b"\r\n\r\n")[2]) >= 16:
                break
    except TimeoutError:
        if not data:
            raise
    return data


def listening_sockets(root_pid: int, timeout: float = 2.0) -> list[ListeningSocket]:
    """Every listening TCP socket of `root_pid` and its descendants, probed once each."""
    import psutil

    root = psutil.Process(root_pid)
    found: list[ListeningSocket] = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
            role = role_of(proc.cmdline())
        except psutil.Error:
            continue  # ended while we looked
        for conn in conns:
            if conn.status != psutil.CONN_LISTEN:
                continue
            address, port = conn.laddr.ip, conn.laddr.port
            found.append(ListeningSocket(proc.pid, role, address, port,
                                         interface_of(address), probe(address, port, timeout)))
    return sorted(found, key=lambda s: (s.role, s.port))


def local_run_sockets() -> list[ListeningSocket]:
    """Start the embedded local Ray as `python -m service run` does (2 CPUs), run one task so
    a worker exists, list the sockets, shut down."""
    import argparse
    import os

    import ray

    from service.backends.tune.ray_start import init_ray

    init_ray(argparse.Namespace(address=None, num_cpus=2, num_gpus=0, verbose=False))
    try:
        ray.get(ray.remote(lambda: os.getpid()).remote())
        return listening_sockets(os.getpid())
    finally:
        ray.shutdown()


def main(as_json: bool = False) -> int:
    """Print the table (or JSON rows) for a local run."""
    rows = local_run_sockets()
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    print(f"{'role':20s} {'pid':>7s} {'address:port':28s} {'interface':16s} "
          f"answer to a request with no token")
    for r in rows:
        print(r.row())
    return 0
