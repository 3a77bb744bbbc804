"""The side-by-side run end to end on a tiny budget: every cell a uniquely named Tune
experiment under one storage path, final tests, and tables of the right shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from service.backends.tune.experiment import ExperimentExists, cells, check_fresh, run_all
from service.cli import live_report
from service.core.config import build_config
from service.reports import mean_ci95, table9, write_report

SEARCHERS = ["grid", "skopt"]
BACKBONES = ["vgg16@0.0625", "resnet18@0.0625"]
SEEDS = [0, 1]
REFRESHED: list[Any] = []


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
    from service.backends.tune.experiment import ReportRefresher

    # every second: the tiny run's cells share one driver and may all end together, when a
    # refresh is no longer due (the final report follows); on a real run it is every minute
    refresher = ReportRefresher(cfg.experiment_dir, every_s=1.0, writer=live_report)
    summaries = run_all(cfg, log=lambda *_: None, refresher=refresher)
    # written by the run itself, before the final report below; the files a refresh reads
    # are renamed into place whole (service.core.layout.write_json), so none of them failed
    REFRESHED.append(((cfg.experiment_dir / "report" / "index.html").exists(),
                      refresher.written > 0, refresher.last_error))
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
    report), without the paper's figures; a refresh that cannot be written yet is no
    error."""
    from service.backends.tune.experiment import ReportRefresher

    cfg, _, written = bench
    assert REFRESHED == [(True, True, None)]
    refresher = ReportRefresher(tmp_path, every_s=0.0, writer=live_report)  # nothing yet
    assert refresher.tick()
    refresher.close()
    assert refresher.written == 0 and not (tmp_path / "report").exists()
    refresher = ReportRefresher(cfg.experiment_dir, every_s=0.0, gap_s=0.0, writer=live_report)
    assert refresher.tick()
    refresher.close()
    assert refresher.written == 1
    live = write_report(cfg.experiment_dir, tmp_path / "live", live=True)
    assert "index" in live and "best_vs_trials" in live
    assert not [k for k in live if k.startswith("fig")]  # the paper's figures: at the end
    assert [k for k in written if k.startswith("fig")]


def test_refreshes_are_due_every_so_often_and_when_an_experiment_ends() -> None:
    """The schedule: periodic, soon after an experiment ends but never closer than the gap
    to the last refresh (after the first), one at a time."""
    from service.backends.tune.experiment import ReportRefresher

    now = [100.0]
    calls: list[float] = []
    refresher = ReportRefresher(Path("."), every_s=60.0, gap_s=30.0, clock=lambda: now[0],
                                writer=lambda _: calls.append(now[0]))

    def tick() -> bool:
        started = refresher.tick()
        refresher.close()
        return started

    assert not tick()  # nothing due yet
    refresher.request()  # the first ended experiment: at once
    assert tick() and calls == [100.0]
    now[0] = 110.0
    refresher.request()  # 10 s later: waits for the gap
    assert not tick()
    now[0] = 130.0
    assert tick() and calls == [100.0, 130.0]
    now[0] = 189.0
    assert not tick()
    now[0] = 190.0  # periodic
    assert tick() and len(calls) == 3


def test_a_refresh_that_wrote_nothing_does_not_hold_back_the_next() -> None:
    """A refresh that failed (no results yet, or a file being written) is no error and does
    not count for the gap: the next ended experiment is shown at once."""
    from service.backends.tune.experiment import ReportRefresher

    now = [100.0]

    def writer(_: Path) -> None:
        if now[0] < 105.0:
            raise FileNotFoundError("no results yet")

    refresher = ReportRefresher(Path("."), every_s=60.0, gap_s=30.0, clock=lambda: now[0],
                                writer=writer)
    refresher.request()
    assert refresher.tick()
    refresher.close()
    assert refresher.written == 0 and "no results yet" in refresher.last_error
    now[0] = 110.0
    refresher.request()  # 10 s after a refresh that wrote nothing: at once
    assert refresher.tick()
    refresher.close()
    assert refresher.written == 1 and refresher.last_error is None


def test_refreshes_take_at_most_their_share_of_one_core() -> None:
    """A refresh that took 4 s of CPU holds the next back 80 s (5% of one core), both the
    periodic one and one an ended experiment asks for; a cheap one leaves the gaps as they
    were; the CPU of every refresh is counted."""
    from service.backends.tune.experiment import ReportRefresher

    now, cpu, cost = [100.0], [0.0], [4.0]

    def writer(_: Path) -> None:
        cpu[0] += cost[0]

    refresher = ReportRefresher(Path("."), every_s=60.0, gap_s=30.0, clock=lambda: now[0],
                                writer=writer, cpu_share=0.05, cpu_clock=lambda: cpu[0])

    def tick() -> bool:
        started = refresher.tick()
        refresher.close()
        return started

    refresher.request()
    assert tick() and refresher.spacing == pytest.approx(80.0)
    now[0] = 160.0  # periodic, and an experiment ended: both wait for 180
    refresher.request()
    assert not tick()
    now[0] = 180.0
    cost[0] = 0.5  # 10 s of spacing: under the 30 s gap
    assert tick()
    now[0] = 200.0
    refresher.request()
    assert not tick()
    now[0] = 210.0
    assert tick()
    assert refresher.written == 3 and refresher.cpu_s == pytest.approx(5.0)


def test_the_time_breakdown_adds_up_to_the_slot_time(bench) -> None:
    """Where the run's slot-seconds went (service.reports.overhead): every measured phase is
    there and positive where it must be, the measured ones fit in the slot time, and with
    the rest they add up to it; searchers.md carries the table."""
    from service.reports.overhead import PHASES, RUN_FILE, breakdown, breakdown_markdown

    cfg, _, written = bench
    run = json.loads((cfg.experiment_dir / RUN_FILE).read_text())
    result = breakdown(cfg.experiment_dir)
    assert result["slots"] == run["slots"] == 2  # 2 CPUs, 1 per trial
    seconds = result["seconds"]
    assert list(seconds) == list(PHASES)
    for phase in ("training", "evaluation", "trial setup", "experiment start", "final test"):
        assert seconds[phase] > 0, phase
    # a row carries the report call before it: these one-epoch trials have none to tell
    assert seconds["checkpoint and report"] == 0
    measured = sum(v for k, v in seconds.items() if k != PHASES[-1])
    assert 0 < measured <= result["slot_s"] * 1.05  # cells side by side, one slot each
    assert sum(seconds.values()) == pytest.approx(result["slot_s"])
    assert sum(result["share"].values()) == pytest.approx(1.0)
    epochs = pd.read_csv(written["trials"])  # one row per trial
    assert seconds["training"] < result["slot_s"]
    assert len(epochs) > 0
    assert "## Where the time went" in written["searchers"].read_text()
    # the live report's refreshes: counted with their CPU, and said under the table
    assert result["report_refreshes"] == run["report_refreshes"] >= 1
    assert result["report_refresh_cpu_s"] > 0
    assert "The live report was rewritten" in breakdown_markdown(result)


def test_an_experiment_starting_while_every_slot_is_busy_costs_no_slot_time() -> None:
    """With more experiments than slots (max_parallel_experiments), a start counts only
    where a slot held no trial or final test, and never more slots than are free."""
    from service.reports.overhead import _starting_slot_s

    assert _starting_slot_s([(0.0, 2.0)], [], 2) == pytest.approx(2.0)
    assert _starting_slot_s([(0.0, 2.0)], [(0.0, 5.0), (-1.0, 3.0)], 2) == pytest.approx(0.0)
    assert _starting_slot_s([(0.0, 2.0)], [(0.0, 1.0), (0.0, 5.0)], 2) == pytest.approx(1.0)
    # two starting at once with one slot free: one slot's worth
    assert _starting_slot_s([(0.0, 2.0), (0.0, 2.0)], [(0.0, 2.0)], 2) == pytest.approx(2.0)
    assert _starting_slot_s([], [(0.0, 1.0)], 2) == 0.0
