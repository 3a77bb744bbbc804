"""Pham 2024 Table 2 and the optimizer-schedule plot, from experiment folders shaped like
Tune's (result.json per trial, final_test.json and summary.json per cell), without Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from service.core.layout import Cell
from service.reports import write_report
from service.reports.load import load_epochs
from service.reports.table2 import (
    CONVERGENCE_DEFINITION,
    SCHEDULE_PNG,
    convergence_epoch,
    is_table2_method,
    load_final_metrics,
    plot_optimizer_schedule,
    table2,
    table2_display,
    write_table2,
)
from tests.reports.test_report_storage import add_experiment, result_line

BACKBONE = "resnet18@0.25"
PPO, FIXED = "optsel-ppo:3opt", "fixed:sgd"

# (val_acc, optimizer, epoch_time_s) per epoch, per trial, per cell (method, seed)
CURVES: dict[tuple[str, int], dict[str, list[tuple[float, str, float]]]] = {
    # best trial p0a: best 0.80 at epoch 4, 0.796 at epoch 3 is within 0.005 -> 3;
    # p0b (worse) would give 2 and must not count
    (PPO, 0): {"p0a": [(0.50, "sgd", 10.0), (0.70, "sgd", 12.0), (0.796, "sam", 20.0),
                       (0.80, "sam", 21.0), (0.79, "adam", 14.0)],
               "p0b": [(0.40, "adam", 11.0), (0.60, "adam", 11.0)]},
    # best 0.82 at epoch 3, 0.818 at epoch 2 -> 2
    (PPO, 1): {"p1a": [(0.60, "sgd", 15.0), (0.818, "sam", 22.5), (0.82, "sam", 22.0),
                       (0.81, "sgd", 9.0)]},
    # best 0.78 at epoch 3; 0.779 after it is within but later -> 3
    (FIXED, 0): {"f0a": [(0.50, "sgd", 8.0), (0.75, "sgd", 8.1), (0.78, "sgd", 8.2),
                         (0.779, "sgd", 8.13)]},
    # 0.72 is 0.05 short of 0.77 -> 3
    (FIXED, 1): {"f1a": [(0.70, "sgd", 7.96), (0.72, "sgd", 8.0), (0.77, "sgd", 8.05)]},
}
TESTS = {  # final_test.json; the fixed cells are older files without the macro keys
    (PPO, 0): {"test_acc": 0.85, "test_f1_macro": 0.84, "test_precision_macro": 0.86,
               "test_recall_macro": 0.85},
    (PPO, 1): {"test_acc": 0.87, "test_f1_macro": 0.86, "test_precision_macro": 0.88,
               "test_recall_macro": 0.87},
    (FIXED, 0): {"test_acc": 0.80},
    (FIXED, 1): {"test_acc": 0.82},
}
T_975_1 = 12.706204736  # scipy.stats.t.ppf(0.975, 1): two seeds


def add_optsel_experiment(root: Path, name: str, curves: dict, tests: dict,
                          dataset: str = "cifar10") -> Path:
    """An experiment folder: its config (written by hand: the new entries may not be
    registered yet), one cell per (method, seed), trials with result.json lines."""
    folder = root / name
    folder.mkdir(parents=True)
    searchers = list(dict.fromkeys(m for m, _ in curves))
    config = {"name": name, "dataset": {"name": dataset, "root": "/data"},
              "searchers": searchers, "backbones": [BACKBONE],
              "seeds": sorted({s for _, s in curves})}
    (folder / "experiment_config.json").write_text(json.dumps(config))
    for (method, seed), trials in curves.items():
        cell = folder / Cell(method, BACKBONE, seed).name
        cell.mkdir()
        (cell / "summary.json").write_text(json.dumps(
            {"searcher": method, "backbone": BACKBONE, "seed": seed, "wall_time_s": 60.0}))
        for trial_id, rows in trials.items():
            trial = cell / f"trial_{trial_id}"
            trial.mkdir()
            (trial / "params.json").write_text("{}")
            lines = []
            for i, (acc, opt, secs) in enumerate(rows):
                line = result_line(trial_id, i + 1, acc, backbone=BACKBONE, start=1e9)
                line.update(hp_optimizer=opt, epoch_time_s=secs)
                lines.append(json.dumps(line))
            (trial / "result.json").write_text("\n".join(lines) + "\n")
        if (method, seed) in tests:
            (cell / "final_test.json").write_text(json.dumps(
                {**tests[(method, seed)], "test_loss": 0.4, "epochs": 5, "config": {}}))
    return folder


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    return add_optsel_experiment(tmp_path / "results", "opt", CURVES, TESTS)


def test_entries_that_get_table2() -> None:
    assert is_table2_method("optsel-dqn") and is_table2_method(PPO)
    assert is_table2_method("fixed") and is_table2_method(FIXED)
    assert not is_table2_method("random") and not is_table2_method("emerald-dynamic")


def test_convergence_epoch_is_within_half_a_point_inclusive() -> None:
    trial = pd.DataFrame({"epoch": [3, 1, 2], "val_acc": [0.8, 0.5, 0.795]})
    assert convergence_epoch(trial) == 2
    assert math.isnan(convergence_epoch(pd.DataFrame({"epoch": [1], "val_acc": [math.nan]})))


def test_table2_numbers(experiment: Path) -> None:
    table = table2(load_epochs(experiment), load_final_metrics(experiment),
                   datasets="cifar10", order=[PPO, FIXED])
    assert list(table.method) == [PPO, FIXED]  # config order, not folder order
    ppo, fixed = (table.iloc[i] for i in range(2))
    assert (ppo.dataset, ppo.backbone, ppo.seeds, ppo.macro_seeds) == (
        "cifar10", BACKBONE, 2, 2)
    assert ppo.test_acc == pytest.approx(86.0)
    assert ppo.test_acc_ci95 == pytest.approx(T_975_1 * 1.0)  # sd 1.414 points / sqrt 2
    assert ppo.f1 == pytest.approx(85.0) and ppo.f1_ci95 == pytest.approx(T_975_1)
    assert ppo.precision == pytest.approx(87.0) and ppo.recall == pytest.approx(86.0)
    assert ppo.converges_after == pytest.approx(2.5)  # (3 + 2) / 2, best trials only
    assert (ppo.epoch_time_min_s, ppo.epoch_time_max_s) == (9.0, 22.5)
    assert fixed.test_acc == pytest.approx(81.0) and fixed.converges_after == 3.0
    assert (fixed.epoch_time_min_s, fixed.epoch_time_max_s) == (7.96, 8.2)


def test_missing_macro_keys_leave_empty_cells(experiment: Path) -> None:
    table = table2(load_epochs(experiment), load_final_metrics(experiment), order=[PPO, FIXED])
    fixed = table.iloc[1]
    assert fixed.seeds == 2 and fixed.macro_seeds == 0
    assert all(math.isnan(fixed[c]) for c in ("f1", "precision", "recall", "f1_ci95"))
    shown = table2_display(table).iloc[1]
    assert (shown["F1 %"], shown["precision %"], shown["recall %"]) == ("", "", "")
    assert shown["acc %"] == f"81.00 +- {100 * T_975_1 * 0.01:.2f}"
    # a frame without the macro columns at all (load_final_tests' shape) works too
    tests = load_final_metrics(experiment).drop(columns=["test_f1_macro", "test_recall_macro"])
    assert table2(load_epochs(experiment), tests).f1.isna().all()


def test_write_table2_files(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = write_table2(experiment, out)
    assert set(written) == {"table2", "table2_csv", "optimizer_schedule"}
    csv = pd.read_csv(written["table2_csv"])
    assert list(csv.method) == [PPO, FIXED] and list(csv.dataset) == ["cifar10"] * 2
    md = written["table2"].read_text()
    assert md.startswith("# Table 2") and "Pham 2024 Table 2" in md
    assert CONVERGENCE_DEFINITION in md and "95% interval over seeds" in md
    rows = {cells[3]: cells for line in md.splitlines() if line.startswith("| cifar10")
            for cells in [[c.strip() for c in line.split("|")]]}
    assert rows[PPO][5] == "86.00 +- 12.71" and rows[PPO][10] == "2.5"
    assert rows[PPO][11] == "9.00-22.50" and rows[FIXED][11] == "7.96-8.20"
    assert rows[FIXED][6:9] == ["", "", ""]  # F1, precision, recall
    png = written["optimizer_schedule"]
    assert png == out / SCHEDULE_PNG and png.stat().st_size > 1000


def test_schedule_plot_skipped_without_switching(tmp_path: Path) -> None:
    fixed_only = {k: v for k, v in CURVES.items() if k[0] == FIXED}
    folder = add_optsel_experiment(tmp_path / "results", "fixed", fixed_only, TESTS)
    assert plot_optimizer_schedule(load_epochs(folder), tmp_path) is None
    written = write_table2(folder, tmp_path / "out")
    assert "optimizer_schedule" not in written
    assert not (tmp_path / "out" / SCHEDULE_PNG).exists()
    assert plot_optimizer_schedule(pd.DataFrame(), tmp_path) is None


def test_write_report_adds_table2(experiment: Path) -> None:
    written = write_report(experiment)
    out = experiment / "report"
    assert written["table2"] == out / "table2.md" and (out / "table2.csv").exists()
    assert written["optimizer_schedule"] == out / SCHEDULE_PNG
    page = written["index"].read_text()
    assert "Table 2: test metrics" in page and f'<img src="{SCHEDULE_PNG}"' in page
    # Table 2 right after Table 9, as pandas HTML with its definition
    assert page.index("<h2>Table 9") < page.index("<h2>Table 2") < page.index("<h2>Searchers")
    section = page[page.index("<h2>Table 2"):page.index("<h2>Searchers")]
    assert "<table" in section and f"<td>{PPO}</td>" in section
    assert "86.00 +- 12.71" in section and "within 0.5 points (0.005)" in section


def test_storage_report_keeps_table2_to_its_experiments(experiment: Path) -> None:
    root = experiment.parent
    base = add_experiment(root, "base", ["random"], [BACKBONE])
    base_cell = base / Cell("random", BACKBONE, 0).name
    base_cell.mkdir()
    write_report(base)
    assert not (base / "report" / "table2.md").exists()  # no optimizer selection in it
    written = write_report(root)
    csv = pd.read_csv(written["table2_csv"])
    assert list(csv.method) == [PPO, FIXED]
    assert csv.set_index("method").converges_after[PPO] == pytest.approx(2.5)
