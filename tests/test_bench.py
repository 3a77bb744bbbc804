"""The side-by-side run end to end on a tiny budget: every cell a uniquely named Tune
experiment under one storage path, final tests, and tables of the right shape."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from service.config import build_config
from service.experiment import ExperimentExists, cells, check_fresh, run_all
from service.reports import mean_ci95, table9, write_report

SEARCHERS = ["grid", "skopt"]
BACKBONES = ["vgg16@0.0625", "resnet18@0.0625"]
SEEDS = [0, 1]
REFRESHED: list[bool] = []


@pytest.fixture(scope="module")
def bench(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("bench")
    cfg = build_config({
        "name": "tiny", "storage": str(storage), "searchers": SEARCHERS,
        "backbones": BACKBONES, "seeds": SEEDS, "budget": {"trials": 2, "epochs": 1},
        "concurrency": 1, "dataset": {"name": "synthetic", "max_train": 100},
        "space": {"optimizer": ["adam", "sgd"], "lr": {"loguniform": [1e-3, 1e-2]},
                  "batch_size": 50},
    })
    check_fresh(cfg)
    summaries = run_all(cfg, log=lambda *_: None)
    # written by the run itself (when each experiment ended), before the final report below
    REFRESHED.append((cfg.experiment_dir / "report" / "index.html").exists())
    return cfg, summaries, write_report(cfg.experiment_dir)


def test_every_cell_is_its_own_experiment(bench) -> None:
    cfg, summaries, _ = bench
    assert len(summaries) == len(SEARCHERS) * len(BACKBONES) * len(SEEDS)
    assert not [s for s in summaries if "failed" in s]
    names = {c.name for c in cells(cfg)}
    assert len(names) == len(summaries)
    for name in names:
        folder = cfg.experiment_dir / name
        assert (folder / "summary.json").exists() and (folder / "final_test.json").exists()
        test = json.loads((folder / "final_test.json").read_text())
        assert 0.0 <= test["test_acc"] <= 1.0
        assert test["config"]["batch_size"] == 50
    with pytest.raises(ExperimentExists):
        check_fresh(cfg)


def test_trials_table_has_one_row_per_trial(bench) -> None:
    cfg, _, written = bench
    trials = pd.read_csv(written["trials"])
    assert len(trials) == len(SEARCHERS) * len(BACKBONES) * len(SEEDS) * 2
    for column in ("searcher", "backbone", "seed", "config", "best_val_acc", "test_acc",
                   "train_time_s", "epochs"):
        assert column in trials
    assert set(trials.searcher) == set(SEARCHERS)
    assert set(trials.backbone) == set(BACKBONES)


def test_table9_shape_and_ci(bench) -> None:
    cfg, _, written = bench
    t9 = pd.read_csv(cfg.experiment_dir / "report" / "table9.csv")
    assert len(t9) == len(SEARCHERS) * len(BACKBONES)
    assert (t9.seeds == len(SEEDS)).all()
    md = written["table9"].read_text().splitlines()
    header = next(line for line in md if line.startswith("| searcher"))
    assert header == "| searcher | " + " | ".join(BACKBONES) + " |"
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| searcher")]
    assert [r.split("|")[1].strip() for r in rows] == SEARCHERS
    t8 = pd.read_csv(cfg.experiment_dir / "report" / "table8.csv")
    assert list(t8.backbone) == ["vgg16@0.0625"]
    assert t8.bayesian_searcher.iloc[0] == "skopt"
    for name in ("best_vs_trials", "best_vs_time", "analysis_by_setting",
                 "analysis_optimizer_lr"):
        assert written[name].stat().st_size > 1000
    gen = pd.read_csv(cfg.experiment_dir / "report" / "generalization.csv")
    assert list(gen.searcher) == SEARCHERS or set(gen.searcher) == set(SEARCHERS)
    assert (gen.VTAG >= 0).all() and (gen.CAPC >= 0).all() and (gen.SVDAC >= 0).all()


def test_tensorboard_event_files_per_trial(bench) -> None:
    cfg, _, _ = bench
    events = list(cfg.experiment_dir.glob("*/trial_*/events.out.tfevents.*"))
    assert len(events) == len(SEARCHERS) * len(BACKBONES) * len(SEEDS) * 2


def test_mean_ci95() -> None:
    mean, half = mean_ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(12.706 * 0.1414213 / 1.4142136, rel=1e-3)
    assert mean_ci95([0.4]) == (0.4, 0.0)
    assert table9(pd.DataFrame(), pd.DataFrame()).empty


def test_generalization_metrics_by_hand() -> None:
    from service.reports import generalization

    trials = pd.DataFrame({
        "searcher": ["s"] * 4, "backbone": ["a", "a", "b", "b"], "seed": [0] * 4,
        "trial": ["t1", "t2", "t3", "t4"], "best_val_acc": [0.8, 0.6, 0.4, 0.3],
        "train_acc_at_best": [0.9, 0.6, 0.5, 0.3]})
    epochs = pd.DataFrame({
        "searcher": ["s"] * 4, "backbone": ["a", "a", "b", "b"], "seed": [0] * 4,
        "trial": ["t1", "t2", "t3", "t4"], "epoch": [1] * 4, "val_acc": [0.8, 0.6, 0.4, 0.3],
        "hp_flip": [True, False, True, False], "hp_rotation": [0] * 4,
        "hp_shift": [False] * 4, "hp_zoom": [False] * 4})
    row = generalization(trials, epochs).iloc[0]
    assert row.VTAG == pytest.approx(0.1)  # chosen trials t1 (|0.8-0.9|) and t3 (|0.4-0.5|)
    assert row.CAPC == pytest.approx(0.2 / 0.6)  # best 0.8 and 0.4: std 0.2, mean 0.6
    assert row.SVDAC == pytest.approx(0.075**2)  # flip on 0.6, off 0.45: variance 0.075**2


def test_tensorboard_hparams_name_the_searcher(bench) -> None:
    """Each finished trial's HParams entry names its searcher and backbone beside the
    searched values (Tune's own logger writes only the searched values)."""
    cfg, _, _ = bench
    for cell in cells(cfg):
        events = list((cfg.experiment_dir / cell.name).glob("*/events.out.tfevents.*"))
        assert events, cell.name
        data = b"".join(e.read_bytes() for e in events)
        assert b"_hparams_/session_start_info" in data
        for text in (b"searcher", cell.searcher.encode(), b"backbone", b"optimizer"):
            assert text in data, text


def test_the_report_is_refreshed_while_the_run_goes_on(bench, tmp_path) -> None:
    """run_all rewrote the report as experiments ended (before the fixture's own final
    report); a refresh is skipped until it is due, and one without results yet is no
    error."""
    import time

    from service.experiment import _refresh_report

    cfg, _, _ = bench
    assert REFRESHED == [True]
    index = cfg.experiment_dir / "report" / "index.html"
    before = index.stat().st_mtime_ns
    now = time.time()
    assert _refresh_report(cfg.experiment_dir, now, 60.0) == now and \
        index.stat().st_mtime_ns == before  # not due: untouched
    assert _refresh_report(cfg.experiment_dir, 0.0, 60.0) > now  # due: rewritten
    assert index.stat().st_mtime_ns > before
    assert _refresh_report(tmp_path, 5.0, 0.0) == 5.0  # nothing to report yet: no error
