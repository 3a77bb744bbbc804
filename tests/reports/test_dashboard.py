"""`python -m service dashboard`'s refusals (one `error:` line naming the argument, exit 2,
nothing served) and the run commands' dashboard line; the dashboard's own page is driven in a
browser by tests/reports/test_dashboard_browser.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from service.cli import main
from service.core.api import ConfigError
from service.reports.dashboard import check_port, find_journal, tunnel_line


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_a_missing_or_wrong_path_is_one_error_line(tmp_path: Path, capsys) -> None:
    assert "path: " in refused(["dashboard", str(tmp_path / "nowhere")], capsys)
    assert "holds no optuna.journal" in refused(["dashboard", str(tmp_path)], capsys)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "is not an Optuna journal" in refused(["dashboard", str(text)], capsys)


def test_an_unreadable_journal_is_one_error_line(tmp_path: Path, capsys) -> None:
    import os

    journal = tmp_path / "optuna.journal"
    journal.write_text('{"op_code": 0}\n')
    journal.chmod(0)
    try:
        if os.access(journal, os.R_OK):  # root reads it anyway
            pytest.skip("this user reads files without read permission")
        assert "cannot be read" in refused(["dashboard", str(tmp_path)], capsys)
    finally:
        journal.chmod(0o644)


def test_a_bad_or_taken_port_is_one_error_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "optuna.journal").write_text("")
    assert find_journal(tmp_path) == tmp_path / "optuna.journal"
    assert "--port: 70000" in refused(["dashboard", str(tmp_path), "--port", "70000"], capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--port: {port} is in use"):
            check_port(port)
    assert "--port: invalid int value" in refused(["dashboard", str(tmp_path), "--port",
                                                   "x"], capsys)


def test_the_tunnel_line_forwards_the_port_to_loopback() -> None:
    line = tunnel_line(8123)
    assert line.startswith("ssh -N -L 8123:127.0.0.1:8123 ") and "@" in line


def test_a_run_prints_the_dashboard_command_when_it_starts(tmp_path: Path, capsys) -> None:
    from service.core.table import load_table
    from tests.backends.replay.tables import emerald_table

    table = load_table(emerald_table(tmp_path / "emerald.parquet"))
    argv = ["run", "--backend", "replay", "--table", table.path, "--searchers", "random",
            "--trials", "2", "--epochs", "2", "--storage", str(tmp_path / "r"),
            "--set", "replay.workers=1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    folder = tmp_path / "r" / "emerald"
    assert lines[0] == f"live trials: python -m service dashboard {folder}"
    assert (folder / "optuna.journal").stat().st_size > 0
    assert main([*argv, "--name", "off", "--set", "dashboard=false"]) == 0
    assert "dashboard" not in capsys.readouterr().out.splitlines()[0]
    assert not (tmp_path / "r" / "off" / "optuna.journal").exists()
