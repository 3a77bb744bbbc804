"""optuna-dashboard on a run's Optuna journal (`<experiment>/optuna.journal`, written while
the run goes on: service.backends.journal), served on 127.0.0.1 only: on a cluster a user
reaches it through an SSH tunnel to the head node, never through an open port."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from service.core.api import ConfigError
from service.core.layout import JOURNAL_FILE

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def find_journal(path: str | Path) -> Path:
    """The journal a `dashboard` argument names: a journal file, or an experiment folder
    holding one; ConfigError (one line naming the argument) otherwise."""
    given = Path(path).expanduser()
    journal = given / JOURNAL_FILE if given.is_dir() else given
    if given.is_dir() and not journal.exists():
        raise ConfigError(f"path: {str(given)!r} holds no {JOURNAL_FILE}; give the folder of "
                          "a run started with dashboard: true (<storage>/<name>) or its "
                          "journal file")
    if not journal.exists():
        raise ConfigError(f"path: {str(given)!r} does not exist; give a run's folder "
                          f"(<storage>/<name>) or its {JOURNAL_FILE}")
    if not journal.is_file():
        raise ConfigError(f"path: {str(journal)!r} is not a regular file; give a run's "
                          f"folder or its {JOURNAL_FILE}")
    try:
        with journal.open("rb") as f:
            first = f.readline()
    except OSError as err:
        raise ConfigError(f"path: {str(journal)!r} cannot be read ({err.strerror}); give "
                          "a journal this user can read") from None
    if first and not _journal_line(first):
        raise ConfigError(f"path: {str(journal)!r} is not an Optuna journal (its first "
                          f"line is no journal entry); give a run's folder or its "
                          f"{JOURNAL_FILE}")
    return journal


def _journal_line(line: bytes) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and "op_code" in entry


def check_port(port: int) -> None:
    """Refuse a port out of range or taken on 127.0.0.1 (one line naming --port)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port}; give 1 to 65535 (0: any free port)")
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ConfigError(f"--port: {port} is in use on {HOST}; give another, e.g. "
                              f"--port {port + 1}") from None


def tunnel_line(port: int) -> str:
    """The SSH command that brings this machine's dashboard to a user's own machine."""
    return (f"ssh -N -L {port}:{HOST}:{port} {getpass.getuser()}@{socket.gethostname()}")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def app(journal: Path) -> Any:
    """optuna-dashboard's WSGI application over a journal file, read-only."""
    import optuna_dashboard
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna_dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal))))


def make(journal: Path, port: int) -> WSGIServer:
    """The dashboard's server bound to 127.0.0.1:`port` (0: any free port)."""
    return make_server(HOST, port, app(journal), server_class=_Server,
                       handler_class=_QuietHandler)


def serve(journal: Path, port: int) -> None:
    """Serve the dashboard until interrupted, after printing where and how to reach it."""
    server = make(journal, port)
    port = server.server_address[1]

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"optuna-dashboard on {journal}: http://{HOST}:{port}/ (Ctrl-C stops it)")
    say(f"from another machine (a cluster's head node): {tunnel_line(port)}, then open "
        f"http://{HOST}:{port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
