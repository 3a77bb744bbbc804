"""The socket listing (service/backends/tune/sockets.py): roles, interfaces and probe answers on
servers the test starts, then the embedded local Ray of `python -m service sockets`, which must
bind every socket to loopback and serve nothing but metrics to a caller with no token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from service.backends.tune import sockets

ROOT = Path(__file__).resolve().parents[3]


def test_roles_from_command_lines() -> None:
    assert sockets.role_of(["/x/gcs_server", "--log_dir=/tmp"]) == "GCS server"
    assert sockets.role_of(["/x/raylet", "--raylet_socket_name=s"]) == "raylet"
    assert sockets.role_of(["ray::DashboardAgent"]) == "dashboard agent"
    assert sockets.role_of(["python", "/x/ray/dashboard/dashboard.py"]) == "dashboard (head)"
    assert sockets.role_of(["python", "-m", "ray.util.client.server"]) == "Ray Client server"
    assert sockets.role_of(["ray::IDLE"]) == "worker"
    assert sockets.role_of(["python", "-m", "service", "run"]) == "driver"


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("0.0.0.0", "all interfaces"), ("::", "all interfaces"), ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7")])
def test_interfaces(address: str, expected: str) -> None:
    assert sockets.interface_of(address) == expected


@contextmanager
def _serve(status: int, body: bytes) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "body", "answer"), [
    (200, b"# HELP ray_x a metric\n# TYPE ray_x gauge\n", "HTTP 200: Prometheus metrics"),
    (200, b"<!DOCTYPE html><html><body>ui</body></html>", "HTTP 200: HTML page"),
    (200, b"{\"data\": 1}", "HTTP 200"),
    (401, b"Unauthorized", "HTTP 401")])
def test_http_answers(status: int, body: bytes, answer: str) -> None:
    with _serve(status, body) as port:
        assert sockets.probe("127.0.0.1", port) == answer
        assert sockets.probe("0.0.0.0", port) == answer  # a wildcard bind is probed on loopback


def test_refused_silent_and_closed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert sockets.probe("127.0.0.1", port) == "refused"  # nothing listens any more

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert sockets.probe("127.0.0.1", silent.getsockname()[1], timeout=0.3) == "silent"

    with socket.socket() as closer:
        closer.bind(("127.0.0.1", 0))
        closer.listen()

        def accept_and_close() -> None:
            conn, _ = closer.accept()
            conn.close()

        thread = threading.Thread(target=accept_and_close, daemon=True)
        thread.start()
        answer = sockets.probe("127.0.0.1", closer.getsockname()[1])
        thread.join(5)
    assert answer == "closed, no answer" or answer.startswith("closed (")


def test_listing_finds_this_process_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rows = [r for r in sockets.listening_sockets(os.getpid(), timeout=0.3)
                if r.port == port]
    assert len(rows) == 1
    assert (rows[0].role, rows[0].interface, rows[0].answer) == ("driver", "loopback", "silent")


def test_the_local_run_binds_loopback_and_refuses_callers_without_a_token() -> None:
    """`python -m service sockets` starts the embedded local Ray as `run` does."""
    out = subprocess.run([sys.executable, "-m", "service", "sockets", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=180, check=True).stdout
    rows = json.loads(out)
    roles = {r["role"] for r in rows}
    assert {"GCS server", "raylet", "dashboard agent", "worker", "driver"} <= roles, roles
    assert all(r["interface"] == "loopback" for r in rows), [
        r for r in rows if r["interface"] != "loopback"]
    grpc_rows = [r for r in rows if r["answer"].startswith("gRPC")]
    assert grpc_rows and not any(r["answer"].endswith("answered") for r in grpc_rows)
    assert any(r["answer"] == "gRPC GCS: UNAUTHENTICATED" for r in rows)
    http_200 = [r for r in rows if r["answer"].startswith("HTTP 200")]
    assert all(r["answer"] == "HTTP 200: Prometheus metrics" for r in http_200), http_200
