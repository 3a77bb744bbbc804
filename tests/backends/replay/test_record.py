"""`record` on a tiny space: SIGKILL the driver mid-way, run the same command again; the
table holds every (configuration, seed) curve exactly once, no curve that had finished
was trained again, and a changed design is refused before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from service.core.table import load_table
from tests.results import sigkill_driver, trial_rows

ROOT = Path(__file__).resolve().parents[3]
EPOCHS = 3
CONFIG = {
    "name": "rec", "dataset": {"name": "synthetic", "max_train": 300, "image_size": 32},
    "backbones": ["resnet18@0.0625"],
    "space": {"optimizer": ["adam", "sgd"], "lr": {"loguniform": [0.001, 0.1]}},
    "record": {"points": 3}, "budget": {"epochs": EPOCHS}, "seeds": [0, 1],
    "concurrency": 2, "resources": {"cpus": 1},
}
CURVES = 2 * 3 * 2


def _finished(folder: Path) -> dict[str, list[dict]]:
    return {t: rows for t, rows in trial_rows(folder).items()
            if rows[-1]["training_iteration"] == EPOCHS}


@pytest.mark.slow  # a real run in its own process (Ray, a kill): full suite only
def test_record_resumes_after_kill_without_recording_twice(tmp_path: Path) -> None:
    config = tmp_path / "rec.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "storage": str(tmp_path),
                                      "record": {**CONFIG["record"],
                                                 "out": str(tmp_path / "tables")}}))
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "service", "record", "--config", str(config),
           "--num-cpus", "2"]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    folder = tmp_path / "rec" / "record__resnet18_w0.0625"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if len(_finished(folder)) >= 2:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the record ended before it could be interrupted"
    assert not sigkill_driver(driver), "processes outlived the killed driver"
    before = _finished(folder)
    assert 2 <= len(before) < CURVES
    assert not (tmp_path / "tables").exists()  # no half table

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "resuming" in again.stdout
    after = trial_rows(folder)
    for trial, rows in before.items():  # finished curves were not trained again
        for key in ("val_acc", "train_loss", "epoch_time_s"):
            assert [r[key] for r in after[trial]] == [r[key] for r in rows], trial
    table = load_table(tmp_path / "tables" / "synthetic-resnet18_w0.0625.parquet")
    assert len(table.configs) == 6 and table.seeds == (0, 1) and table.epochs == EPOCHS
    assert (table.lengths == EPOCHS).all()  # every curve once, every epoch once
    assert table.test is not None and (table.test > 0).all()
    assert table.meta.command.startswith("python -m service record")
    assert table.meta.space["lr"] == {"loguniform": [0.001, 0.1]}

    config.write_text(config.read_text().replace("points: 3", "points: 4"))
    refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "holds a record of another design" in refused.stderr
