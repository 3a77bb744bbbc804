"""Reports over a whole storage path, read from files shaped like Tune's: two experiment
folders, a cut result.json line, a crashed cell without summary.json, errored trials."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from service.cli import main
from service.core.config import ConfigError, build_config
from service.core.layout import Cell, parse_cell_name
from service.reports import find_experiments, row_labels, write_report

VGG, RESNET = "vgg16@0.0625", "resnet18@0.0625"
EPOCH_S = 2.0
T0 = 1_800_000_000


def result_line(trial_id: str, epoch: int, val_acc: float, *, backbone: str, start: float,
                lr: float = 0.01) -> dict[str, Any]:
    """One line of Tune's result.json as train_trial's report makes it (JsonLoggerCallback)."""
    diverged = math.isnan(val_acc)
    return {
        "val_acc": val_acc, "val_loss": float("nan") if diverged else 1.0 - val_acc,
        "train_acc": 0.5 if diverged else val_acc + 0.05, "train_loss": 0.4,
        "grad_norm": 1.5, "epoch_time_s": EPOCH_S, "images_per_s": 120.0,
        "model_size_mb": 0.2, "num_parameters": 50_000, "epoch": epoch, "diverged": diverged,
        "device": "cpu", "hp_optimizer": "adam", "hp_lr": lr, "hp_flip": 0, "hp_rotation": 0,
        "hp_shift": 0, "hp_zoom": 0, "gpu_ids": "",
        "timestamp": int(start + epoch * EPOCH_S), "checkpoint_dir_name":
        f"checkpoint_{epoch - 1:06d}", "done": False, "training_iteration": epoch,
        "trial_id": trial_id, "date": "2027-01-01_00-00-00", "time_this_iter_s": EPOCH_S,
        "time_total_s": epoch * EPOCH_S, "pid": 4242, "hostname": "node",
        "node_ip": "127.0.0.1", "time_since_restore": epoch * EPOCH_S,
        "iterations_since_restore": epoch,
        "config": {"optimizer": "adam", "lr": lr, "flip": False, "rotation": 0,
                   "shift": False, "zoom": False, "batch_size": 32,
                   "run": {"backbone": backbone, "epochs": 3, "seed": 0}},
    }


def add_trial(cell: Path, trial_id: str, accs: list[float], *, start: float = T0,
              error: bool = False, cut: bool = False) -> None:
    """A trial folder: params.json, result.json (one line per epoch; `cut` adds a line cut
    mid-write) and, for a failed trial, Tune's error.txt."""
    backbone = parse_cell_name(cell.name).backbone
    folder = cell / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"lr": 0.01}))
    lines = [json.dumps(result_line(trial_id, i + 1, acc, backbone=backbone, start=start))
             for i, acc in enumerate(accs)]
    if cut:
        lines.append(json.dumps(result_line(trial_id, len(accs) + 1, 0.99, backbone=backbone,
                                            start=start))[:70])
    if accs or cut:
        (folder / "result.json").write_text("\n".join(lines) + ("" if cut else "\n"))
    if error:
        (folder / "error.txt").write_text("Failure # 1 (occurred at 2027-01-01_00-00-09)\n"
                                          "ray::ImplicitFunc.train() RuntimeError: boom\n")


def add_cell(experiment: Path, searcher: str, backbone: str, *, wall: float | None,
             test_acc: float | None = None) -> Path:
    """A cell folder; `wall` None leaves out summary.json, as after a crash."""
    cell = experiment / Cell(searcher, backbone, 0).name
    cell.mkdir(parents=True)
    (cell / "tuner.pkl").write_bytes(b"\x80")
    if wall is not None:
        summary = {"searcher": searcher, "backbone": backbone, "seed": 0, "trials": 2,
                   "errors": 0, "wall_time_s": wall}
        (cell / "summary.json").write_text(json.dumps(summary, indent=1))
    if test_acc is not None:
        (cell / "final_test.json").write_text(json.dumps(
            {"test_acc": test_acc, "test_loss": 0.3, "config": {"lr": 0.01}}))
    return cell


def add_experiment(storage: Path, name: str, searchers: list[str],
                   backbones: list[str]) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    cfg = build_config({"name": name, "storage": str(storage), "searchers": searchers,
                        "backbones": backbones})
    (folder / "experiment_config.json").write_text(json.dumps(cfg.model_dump(), indent=1))
    return folder


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return build_storage(tmp_path)


def build_storage(tmp_path: Path) -> Path:
    """expA: random on two backbones (one trial errored), optuna crashed (cut line, no
    summary.json). expB: random again on vgg16 (so labelled per experiment), hyperband with a
    trial that failed before reporting and a cell whose only trial diverged."""
    root = tmp_path / "results"
    a = add_experiment(root, "expA", ["random", "optuna"], [VGG, RESNET])
    cell = add_cell(a, "random", VGG, wall=30.0, test_acc=0.8)
    add_trial(cell, "a0001", [0.5, 0.7])
    add_trial(cell, "a0002", [0.6, 0.65], start=T0 + 10)
    cell = add_cell(a, "random", RESNET, wall=20.0, test_acc=0.7)
    add_trial(cell, "a0003", [0.4, 0.5, 0.75])
    add_trial(cell, "a0004", [0.3], error=True)
    cell = add_cell(a, "optuna", VGG, wall=None)
    add_trial(cell, "a0005", [0.55, 0.85], cut=True)
    add_trial(cell, "a0006", [0.45], start=T0 + 100)
    b = add_experiment(root, "expB", ["random", "hyperband"], [VGG, RESNET])
    cell = add_cell(b, "random", VGG, wall=12.5, test_acc=0.6)
    add_trial(cell, "b0001", [0.62])
    cell = add_cell(b, "hyperband", VGG, wall=40.0, test_acc=0.9)
    add_trial(cell, "b0002", [0.7, 0.9])
    add_trial(cell, "b0003", [0.2])
    add_trial(cell, "b0004", [], error=True)  # failed before its first report
    cell = add_cell(b, "hyperband", RESNET, wall=5.0)
    add_trial(cell, "b0005", [float("nan")])
    (root / "notes.txt").write_text("not an experiment")
    return root


def test_storage_root_gathers_every_experiment(storage: Path) -> None:
    assert [f.name for f in find_experiments(storage)] == ["expA", "expB"]
    written = write_report(storage)
    assert written["trials"].parent == storage / "report"
    trials = pd.read_csv(written["trials"])
    assert list(trials.columns[:2]) == ["experiment", "searcher"]
    # every trial with at least one readable result; b0004 never reported
    assert len(trials) == 10
    assert trials.groupby("experiment").size().to_dict() == {"expA": 6, "expB": 4}
    cut = trials[trials.trial == "trial_a0005"].iloc[0]
    assert cut.epochs == 2 and cut.best_val_acc == pytest.approx(0.85)  # cut line skipped
    assert trials[trials.trial == "trial_a0004"].errored.item()
    assert trials.set_index("trial").test_acc["trial_b0001"] == pytest.approx(0.6)


def test_table9_keeps_experiments_apart(storage: Path) -> None:
    write_report(storage)
    t9 = pd.read_csv(storage / "report" / "table9.csv")
    # random ran vgg16 in both experiments: one row each; the others keep their name
    assert list(dict.fromkeys(t9.searcher)) == ["expA/random", "optuna", "expB/random",
                                                "hyperband"]
    cell = t9[(t9.searcher == "expB/random") & (t9.backbone == VGG)].iloc[0]
    assert cell.val_acc == pytest.approx(62.0) and cell.test_acc == pytest.approx(60.0)
    cell = t9[(t9.searcher == "expA/random") & (t9.backbone == RESNET)].iloc[0]
    assert cell.val_acc == pytest.approx(75.0)
    md = (storage / "report" / "table9.md").read_text()
    assert "| searcher | " + VGG + " | " + RESNET + " |" in md
    assert "| hyperband | 90.00 +- 0.00 (test 90.00) | n/a |" in md
    t8 = pd.read_csv(storage / "report" / "table8.csv")
    # Table 8 within each experiment: expA's optuna is its Bayesian searcher, expB has none
    assert list(t8.experiment) == ["expA", "expB"] and list(t8.backbone) == [VGG, VGG]
    assert t8.bayesian[0] == pytest.approx(85.0) and t8.bayesian_searcher[0] == "optuna"
    assert math.isnan(t8.bayesian[1]) and t8.grid_search.isna().all()


def test_searchers_table_counts(storage: Path) -> None:
    write_report(storage)
    table = pd.read_csv(storage / "report" / "searchers.csv")
    assert list(zip(table.experiment, table.searcher, strict=True)) == [
        ("expA", "random"), ("expA", "optuna"), ("expB", "random"), ("expB", "hyperband")]
    rows = table.set_index(["experiment", "searcher"])
    random_a = rows.loc[("expA", "random")]
    assert (random_a.cells, random_a.trials, random_a.errored, random_a.epochs) == (2, 4, 1, 8)
    assert random_a.trial_time_s == pytest.approx(8 * EPOCH_S)
    assert random_a.wall_time_s == pytest.approx(50.0)  # both summary.json files
    assert random_a.best_val_acc == pytest.approx(0.75)
    optuna = rows.loc[("expA", "optuna")]  # crashed: no summary.json, a cut line
    assert (optuna.cells, optuna.trials, optuna.errored, optuna.epochs) == (1, 2, 0, 3)
    assert optuna.wall_from_timestamps == 1
    # from the first start (T0) to the last result (T0 + 100 + 1 epoch)
    assert optuna.wall_time_s == pytest.approx(100 + EPOCH_S)
    assert optuna.best_val_acc == pytest.approx(0.85)
    hyperband = rows.loc[("expB", "hyperband")]
    assert (hyperband.cells, hyperband.trials, hyperband.errored, hyperband.epochs) == (
        2, 4, 1, 4)
    assert hyperband.wall_time_s == pytest.approx(45.0) and hyperband.wall_from_timestamps == 0
    md = (storage / "report" / "searchers.md").read_text()
    assert re.search(r"\| expA +\| optuna +\| +1 \| +2 \| +0 \| +3 \|", md)


def test_index_html_holds_tables_and_existing_plots(storage: Path) -> None:
    written = write_report(storage)
    page = written["index"].read_text()
    assert page.count("<table") == 5
    assert "expA/random" in page and "<th>errored</th>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"best_vs_trials.png", "best_vs_time.png", "analysis_by_setting.png",
            "analysis_optimizer_lr.png"} <= set(images)
    for name in images:
        assert (written["index"].parent / name).stat().st_size > 1000
    assert f"tensorboard --logdir {storage}" in page and "{{" not in page


def test_single_experiment_report_is_unchanged_plus_searchers(storage: Path) -> None:
    written = write_report(storage / "expA")
    out = storage / "expA" / "report"
    trials = pd.read_csv(written["trials"])
    assert "experiment" not in trials and len(trials) == 6
    t9 = pd.read_csv(out / "table9.csv")
    assert list(dict.fromkeys(t9.searcher)) == ["random", "optuna"]
    searchers = pd.read_csv(out / "searchers.csv")
    assert list(searchers.experiment) == ["expA", "expA"]
    assert list(searchers.trials) == [4, 2] and list(searchers.errored) == [1, 0]
    assert (out / "index.html").exists() and written["index"] == out / "index.html"


def test_row_labels_only_split_clashing_searchers() -> None:
    cells = pd.DataFrame({"experiment": ["a", "b", "a", "b"],
                          "searcher": ["grid", "grid", "optuna", "optuna"],
                          "backbone": ["vgg16", "vgg19", "vgg16", "vgg16"]})
    assert row_labels(cells) == {("a", "grid"): "grid", ("b", "grid"): "grid",
                                 ("a", "optuna"): "a/optuna", ("b", "optuna"): "b/optuna"}


def test_cli_report_over_storage(storage: Path, capsys) -> None:
    assert main(["report", str(storage), "--out", str(storage / "all")]) == 0
    out = capsys.readouterr().out
    assert f"searchers: {storage / 'all' / 'searchers.md'}" in out
    assert out.strip().splitlines()[-1].endswith(f"tensorboard --logdir {storage}")


def test_cli_report_refuses_a_folder_without_experiments(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "nothing"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "result.json").write_text("{}\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(folder) in err and "experiment_config.json" in err and "<storage>" in err
    assert not (folder / "report").exists()
    with pytest.raises(ConfigError):
        write_report(folder)
