"""The run's console: one progress line from the result files, redrawn on a terminal and
plain lines elsewhere; the libraries' log lines go to the experiment's logs/ folder."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.layout import SUMMARY_FILE, Cell
from service.core.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
CELLS = [Cell("random", "vgg16@0.125", 0), Cell("optuna", "vgg16@0.125", 0)]


def _epochs(folder: Path, cell: Cell, trial: str, accs: list[float], *, cut: bool = False
            ) -> None:
    path = folder / cell.name / f"trial_{trial}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"training_iteration": i + 1, "val_acc": a}) + "\n"
                    for i, a in enumerate(accs))
    path.write_text(lines + ('{"training_iteration": 9, "val_a' if cut else ""))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_counts_and_best_per_searcher_from_the_result_files(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(tmp_path, CELLS, metric="val_acc", mode="max", epochs_per_cell=4,
                        stream=out, every_s=3600)
    _epochs(tmp_path, CELLS[0], "a", [0.2, 0.5])
    _epochs(tmp_path, CELLS[1], "b", [0.1, float("nan")], cut=True)  # a line mid-write
    state = progress.scan()
    assert (state["done"], state["trials"], state["epochs"], state["total_epochs"]) == (
        0, 2, 4, 8)
    assert state["best"] == {"random": 0.5, "optuna": 0.1}
    assert 0 < state["remaining_s"] < float("inf")
    _epochs(tmp_path, CELLS[1], "b", [0.1, 0.3, 0.7])  # rewritten: read on from the offset
    (tmp_path / CELLS[0].name / SUMMARY_FILE).write_text("{}")
    progress.update(force=True)
    progress.update()  # not due yet: nothing more
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and "\033" not in text
    assert "progress: 1/2 experiments, 2 trials" in text and "optuna 0.7, random 0.5" in text


def test_a_terminal_gets_the_line_redrawn_in_place(tmp_path: Path) -> None:
    out = _Terminal()
    progress = Progress(tmp_path, CELLS, metric="val_loss", mode="min", epochs_per_cell=2,
                        stream=out)
    progress.update(force=True)
    progress.log("started random")
    progress.close()
    text = out.getvalue()
    assert text.startswith("\r\033[Kprogress: 0/2") and "\r\033[Kstarted random\n" in text
    assert text.endswith("\n")


@pytest.mark.slow  # a real run in its own process (Ray, a kill): full suite only
def test_a_run_prints_progress_and_sends_library_lines_to_its_logs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "service", "run", "--preset", "smoke", "--searchers",
         "random,optuna", "--storage", str(tmp_path)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    console = proc.stdout + proc.stderr
    assert "progress: 2/2 experiments, 4 trials, 4/4 epochs" in console
    for noise in ("Wrote the latest version", "A new study created", "Started a local Ray"):
        assert noise not in console, noise
    logs = "".join(p.read_text() for p in (tmp_path / "smoke" / "logs").glob("*.log"))
    assert "A new study created" in logs  # Optuna's line, kept in the experiment folder
    assert "\033" not in console  # not a terminal: no control characters
