"""SIGKILL the driver of a running experiment, then `python -m service resume`: every cell
ends with its planned trials, no trial that had finished is lost or trained again, and the
EMERALD-O agent continues from its saved state (one closed step per trial, none twice)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.results import sigkill_driver, trial_rows

ROOT = Path(__file__).resolve().parents[3]
TRIALS, EPOCHS = 6, 2
SEARCHERS = ("emerald", "optuna")


def _finished(folder: Path) -> dict[str, list[dict]]:
    """Trials (cell/trial -> rows) that reported their last epoch."""
    done = {}
    for cell in folder.glob("*__*__s*"):
        for trial, rows in trial_rows(cell).items():
            if rows and rows[-1]["training_iteration"] == EPOCHS:
                done[f"{cell.name}/{trial}"] = rows
    return done


def test_sigkill_driver_then_resume(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    env.pop("RAY_ADDRESS", None)
    run = [sys.executable, "-m", "service", "run", "--preset", "smoke", "--name", "r",
           "--storage", str(tmp_path), "--searchers", ",".join(SEARCHERS),
           "--trials", str(TRIALS), "--epochs", str(EPOCHS), "--concurrency", "1",
           "--set", "final_test=false", "--set", "dataset.image_size=24",
           # Without early stopping: with it, the epochs ASHA saves become more trials
           # (issue 13's equal budgets) and a cell's trial count is not fixed.
           "--set", "searcher_options.emerald.early_stopping=false",
           "--num-cpus", "2"]
    driver = subprocess.Popen(run, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    folder = tmp_path / "r"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        done = _finished(folder)
        per_cell = {s: sum(k.startswith(s + "__") for k in done) for s in SEARCHERS}
        if min(per_cell.values()) >= 2:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the run ended before it could be interrupted"
    writers = sigkill_driver(driver)
    assert not writers, f"processes outlived the killed driver: {writers}"
    before = _finished(folder)
    assert 4 <= len(before) < 2 * TRIALS

    resumed = subprocess.run([sys.executable, "-m", "service", "resume", str(folder),
                              "--num-cpus", "2"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]

    for searcher in SEARCHERS:
        (cell,) = folder.glob(f"{searcher}__*")
        trials = trial_rows(cell)
        assert len(trials) == TRIALS, sorted(trials)
        for trial, rows in trials.items():
            # No epoch ran twice.
            epochs = [r["training_iteration"] for r in rows]
            assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) <= EPOCHS, (
                trial, epochs)
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["trials"] == TRIALS and summary["errors"] == 0
    for key, rows in before.items():  # finished before the kill: kept, not trained again
        cell, trial = key.split("/")
        assert trial_rows(folder / cell)[trial] == rows

    (cell,) = folder.glob("emerald__*")
    with open(cell / "agent_steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert sorted(s["trial_id"] for s in steps) == sorted(t[len("trial_"):]
                                                          for t in trial_rows(cell))
    assert [int(s["step"]) for s in steps] == list(range(1, TRIALS + 1))


def test_trials_outside_the_last_snapshot_are_set_aside(tmp_path: Path) -> None:
    from service.backends.tune.experiment import ORPHANS, set_aside_orphans

    trial_json = json.dumps({"trial_id": "aaaa0001", "stub": False})
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[trial_json, "{}"]], "runner_data": {}}))
    for trial in ("trial_aaaa0001", "trial_bbbb0002"):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "result.json").write_text('{"training_iteration": 1}\n')
    assert set_aside_orphans(tmp_path) == ["trial_bbbb0002"]
    assert (tmp_path / "trial_aaaa0001" / "result.json").exists()
    assert (tmp_path / ORPHANS / "trial_bbbb0002" / "result.json").exists()  # kept
    assert set_aside_orphans(tmp_path / ORPHANS) == []  # no snapshot there: nothing moves
