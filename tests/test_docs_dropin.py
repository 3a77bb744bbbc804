"""docs/drop-in.md runs as written: each Python snippet as a script and each command, from
the repository root, in a fresh process (each starts its own local Ray: SLOW_FILES); the
error it quotes is the one EmeraldSearch raises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray import tune

from rllib_policies import EmeraldSearch
from service.core.space import SpaceError

ROOT = Path(__file__).parents[1]
PAGE = (ROOT / "docs" / "drop-in.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", PAGE, re.S)
COMMANDS = [line for block in re.findall(r"```bash\n(.*?)```", PAGE, re.S)
            for line in block.splitlines() if line.strip()]


def _run(args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_page_has_its_snippet_and_commands() -> None:
    assert len(SNIPPETS) == 1 and len(COMMANDS) == 2


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_each_python_snippet_runs(snippet: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    out = _run([sys.executable, str(script)])
    assert "best: {" in out and "without exploration: {" in out, out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_runs(command: str) -> None:
    program, *args = command.split()
    assert program == ".venv/bin/python"  # the project's interpreter: this test's
    out = _run([sys.executable, *args])
    assert "best val_acc" in out and "agent_steps.csv" in out, out


def test_the_quoted_refusal_is_the_real_one() -> None:
    quoted = re.search(r"^    SpaceError: (.*)$", PAGE, re.M)
    assert quoted is not None
    with pytest.raises(SpaceError) as err:
        EmeraldSearch(names={"mirror": "flip"}).set_search_properties(
            "accuracy", "max", {"mirror": tune.choice([False, True])})
    assert quoted.group(1) == str(err.value)
