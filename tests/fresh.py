"""Run code in a fresh interpreter: what a new process imports is part of its start-up cost
(issue: time goes into training), and only a fresh one shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh_python(code: str, timeout: float = 300) -> str:
    """`code` run by `python -c` in the repository root; its stdout, stripped. Fails the
    test with the end of stderr when it exits non-zero."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()
