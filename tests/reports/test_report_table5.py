"""Iranfar et al. Table V from experiment folders shaped like Tune's (result.json per trial,
final_test.json and the layerwise agents' agent_steps.csv per cell), without Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from service.core.layout import STEP_LOG, Cell
from service.reports import write_report
from service.reports.table5 import is_table5_method, settled, table5
from tests.reports.test_report_storage import result_line

BACKBONE = "vgg16_layers@0.125"
T_975_1 = 12.706204736  # scipy.stats.t.ppf(0.975, 1): two seeds

# per (method, seed): trials, each a list of (reward, terminated) per epoch
CELLS = {
    ("layerwise", 0): {"a": [(0.1, ""), (0.3, "")], "b": [(-1.0, "loss")], "c": [(0.2, "")]},
    ("layerwise", 1): {"a": [(0.4, "")], "b": [(0.1, ""), (0.2, ""), (0.5, "")]},
    ("random", 0): {"a": [(0.1, ""), (0.2, "")], "b": [(0.0, ""), (0.1, "")]},
    ("random", 1): {"a": [(0.3, ""), (0.1, "")]},
}
FINAL = {("layerwise", 0): (0.90, 0.5, 20.0, 5.0), ("layerwise", 1): (0.94, 0.7, 22.0, 6.0),
         ("random", 0): (0.88, 0.9, 30.0, 7.0), ("random", 1): (0.86, 1.1, 34.0, 9.0)}
GREEDY = {0: ["0 1", "1 1", "1 0", "1 0"], 1: ["2 2", "2 2", "2 2"]}


def _experiment(root: Path) -> Path:
    folder = root / "lw"
    folder.mkdir(parents=True)
    (folder / "experiment_config.json").write_text(json.dumps(
        {"name": "lw", "dataset": {"name": "digits"}, "searchers": ["layerwise", "random"],
         "backbones": [BACKBONE], "seeds": [0, 1], "metric": "reward"}))
    for (method, seed), trials in CELLS.items():
        cell = folder / Cell(method, BACKBONE, seed).name
        cell.mkdir()
        for trial_id, rows in trials.items():
            trial = cell / f"trial_{trial_id}"
            trial.mkdir()
            lines = []
            for i, (reward, ended) in enumerate(rows):
                line = result_line(trial_id, i + 1, 0.5, backbone=BACKBONE, start=1e9)
                line.update(reward=reward, terminated=ended)
                lines.append(json.dumps(line))
            (trial / "result.json").write_text("\n".join(lines) + "\n")
        acc, mb, train_ms, infer_ms = FINAL[(method, seed)]
        (cell / "final_test.json").write_text(json.dumps(
            {"test_acc": acc, "test_loss": 0.3, "epochs": 8, "model_size_mb": mb,
             "train_ms_per_batch": train_ms, "infer_ms_per_batch": infer_ms, "config": {}}))
        if method == "layerwise":
            greedy = GREEDY[seed]
            rows = ["episode,phase,greedy,overhead_ms"] + [
                f"{i + 1},{'exploration' if i < 2 else 'exploitation'},{g},{0.5 + seed}"
                for i, g in enumerate(greedy)]
            (cell / STEP_LOG).write_text("\n".join(rows) + "\n")
    return folder


def test_settled_is_where_the_greedy_set_stops_changing() -> None:
    assert settled(["0 1", "1 1", "1 0", "1 0"]) == (3.0, 1.0)
    assert settled(["2 2", "2 2", "2 2"]) == (1.0, 2.0)
    assert settled(["a"]) == (1.0, 0.0)
    assert all(math.isnan(v) for v in settled([]))
    assert is_table5_method("layerwise") and is_table5_method("layerwise:terminal")
    assert not is_table5_method("random")


def test_table5_rows_from_final_tests_trials_and_agent_logs(tmp_path: Path) -> None:
    table = table5(_experiment(tmp_path))
    assert list(table.method) == ["layerwise", "random"]
    lw = table[table.method == "layerwise"].iloc[0]
    assert lw.seeds == 2 and lw.dataset == "digits"
    assert lw.test_acc == pytest.approx(92.0)
    # 90 and 94: sd 2 sqrt 2, half-width t x sd / sqrt 2 = 2 t
    assert lw.test_acc_ci95 == pytest.approx(T_975_1 * 2.0)
    assert lw.model_mb == pytest.approx(0.6) and lw.infer_ms_per_batch == pytest.approx(5.5)
    assert lw.episodes == pytest.approx(2.5)  # 3 and 2 trials
    assert lw.trained_epochs == pytest.approx((2 + 1 + 1 + 1 + 3) / 2)
    assert lw.terminated == pytest.approx(0.5)
    assert lw.best_reward == pytest.approx((0.3 + 0.5) / 2)
    assert lw.overhead_ms == pytest.approx(1.0) and lw.exploration_episodes == 2
    assert lw.settled_at == pytest.approx(2.0) and lw.settled_for == pytest.approx(1.5)
    rnd = table[table.method == "random"].iloc[0]
    assert rnd.test_acc == pytest.approx(87.0) and rnd.best_reward == pytest.approx(0.25)
    assert math.isnan(rnd.overhead_ms) and math.isnan(rnd.settled_at)


def test_report_writes_table5_beside_the_others(tmp_path: Path) -> None:
    folder = _experiment(tmp_path / "results")
    written = write_report(folder)
    text = written["table5"].read_text()
    assert text.startswith("# Table V") and "| layerwise" in text and "Settled at" in text
    assert "Table V" in written["index"].read_text()
