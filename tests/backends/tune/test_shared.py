"""Several cells in one Tune driver (service.backends.tune.shared): each cell gets exactly the
trials it would get in a Tune experiment of its own, its own scheduler sees only its trials and its
epoch budget ends it alone, cells open in order, and a resumed driver picks up every
cell's searcher where it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import ConcurrencyLimiter, Searcher

from service.backends.tune.shared import (
    LOAD_FILE,
    CellScheduler,
    CellSearcher,
    CellTrials,
    open_cells,
)


class Counting(Searcher):
    """Suggests {"x": 0}, {"x": 1}, ... up to `limit` (then FINISHED) and records what it
    was told."""

    def __init__(self, limit: int = 100) -> None:
        super().__init__(metric="val_acc", mode="max")
        self.limit, self.n = limit, 0
        self.completed: list[str] = []
        self.properties: dict[str, Any] | None = None

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        self.properties = config
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.n >= self.limit:
            return Searcher.FINISHED
        self.n += 1
        return {"x": self.n - 1}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.completed.append(trial_id)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"n": self.n, "done": self.completed}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.n, self.completed = state["n"], state["done"]


def _group(tmp_path: Path, samples: tuple[int, ...], parallel: int = 2, concurrency: int = 1,
           limits: tuple[int, ...] | None = None) -> CellSearcher:
    cells = [CellTrials(f"c{i}", ConcurrencyLimiter(Counting((limits or samples)[i]),
                                                    max_concurrent=concurrency),
                        {"seed": i}, {"batch_size": 50}, n, concurrency)
             for i, n in enumerate(samples)]
    return CellSearcher(cells, parallel, str(tmp_path), "val_acc", "max")


def test_each_cell_gets_its_own_trials_in_order_and_within_its_caps(tmp_path: Path) -> None:
    group = _group(tmp_path, (2, 2, 1))
    group.set_search_properties(None, None, {})
    assert [c.searcher.searcher.properties for c in group.cells] == [
        {"batch_size": 50, "run": {"seed": i}} for i in range(3)]
    first = group.suggest("t1")
    assert first == {"batch_size": 50, "x": 0, "run": {"seed": 0}}
    assert group.suggest("t2")["run"] == {"seed": 1}  # c0 is at its cap of 1
    assert group.suggest("t3") is None  # c2 waits: two cells are open
    assert json.loads((tmp_path / LOAD_FILE).read_text()) == {"open": 2, "unopened": 1}
    assert open_cells(tmp_path, 2) == 2
    group.on_trial_complete("t1", {"val_acc": 0.5})
    assert group.cells[0].searcher.searcher.completed == ["t1"]  # told its own only
    assert group.cells[1].searcher.searcher.completed == []
    assert group.suggest("t4")["run"] == {"seed": 0}  # c0's second and last
    assert group.suggest("t5") is None
    group.on_trial_complete("t4", {"val_acc": 0.6})
    assert group.cells[0].done and not group.cells[1].done
    assert group.suggest("t6")["run"] == {"seed": 2}  # c0 done: c2 opens
    assert open_cells(tmp_path, 2) == 2  # c1 and c2 open, none left to open
    group.on_trial_complete("t6", {"val_acc": 0.1})
    assert open_cells(tmp_path, 2) == 1  # the other slot is free for other experiments
    group.on_trial_complete("t2", {"val_acc": 0.2})
    assert group.suggest("t7")["run"] == {"seed": 1}
    assert group.suggest("t8") == Searcher.FINISHED  # every cell has all its trials
    group.on_trial_complete("t7", {"val_acc": 0.3})
    assert all(c.done for c in group.cells)
    times = group.timeline()
    assert times["c0"]["started_unix"] == times["c1"]["started_unix"] == group.started_unix
    assert times["c2"]["started_unix"] == group.cells[2].opened_unix


def test_a_searcher_that_finishes_early_closes_its_cell(tmp_path: Path) -> None:
    group = _group(tmp_path, (3, 1), parallel=1, limits=(1, 1))
    assert group.suggest("a")["x"] == 0
    group.on_trial_complete("a", {})
    assert group.suggest("b")["run"] == {"seed": 1}  # c0 said FINISHED after one trial
    assert group.cells[0].done and group.cells[0].suggested == 1


def test_save_and_restore_every_cell(tmp_path: Path) -> None:
    group = _group(tmp_path, (3, 3))
    group.suggest("t1")
    group.suggest("t2")
    group.on_trial_complete("t1", {})
    staging = tmp_path / "staging"
    staging.mkdir()
    group.save(str(staging / "searcher-state.pkl"))
    # Tune syncs the staging folder to the run folder; the restore reads the cells' files there
    (tmp_path / "c0").mkdir()
    (tmp_path / "c1").mkdir()
    for name in ("c0", "c1"):
        for f in (staging / name).iterdir():
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
    again = _group(tmp_path, (3, 3))
    again.restore(str(staging / "searcher-state.pkl"))
    assert [c.suggested for c in again.cells] == [1, 1]
    assert again.cells[1].live == {"t2"} and again.owner == {"t1": "c0", "t2": "c1"}
    assert again.cells[0].searcher.searcher.completed == ["t1"]
    assert again.suggest("t3") == {"batch_size": 50, "x": 1, "run": {"seed": 0}}
    assert again.suggest("t4") is None  # c1 still at its cap (t2 live), restored too


def test_open_cells_without_a_load_file_is_every_slot(tmp_path: Path) -> None:
    assert open_cells(tmp_path, 3) == 3
    (tmp_path / LOAD_FILE).write_text("not json")
    assert open_cells(tmp_path, 3) == 3


def test_every_searcher_shares_a_driver_and_no_population_or_controller() -> None:
    from service.core import registry

    kinds = {name: (e.kind, e.shares_driver) for name, e in registry.entries().items()}
    assert all(shares == (kind == "searcher") for kind, shares in kinds.values()), kinds
    assert kinds["hyperband"][1] and kinds["asha"][1] and kinds["bohb"][1]
    assert not kinds["pbt"][1] and not kinds["emerald-dynamic"][1]


class FakeTrial:
    def __init__(self, trial_id: str, cell: str, status: str = "PENDING") -> None:
        self.trial_id, self.status, self.last_result = trial_id, status, {}
        self.config = {"run": {"searcher": cell, "backbone": "resnet18@0.0625", "seed": 0}}

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


class FakeController:
    def __init__(self, trials: list[FakeTrial]) -> None:
        self.trials, self.stopped = trials, []

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def get_live_trials(self) -> list[FakeTrial]:
        return [t for t in self.trials if not t.is_finished()]

    def stop_trial(self, trial: FakeTrial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"


class Recording:
    """A cell's scheduler that records the trials it is shown and pauses at epoch 1."""

    supports_buffered_results = False

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self.seen.append([t.trial_id for t in controller.get_trials()])

    def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
        self.seen.append([t.trial_id for t in controller.get_trials()])
        return "PAUSE" if result["training_iteration"] == 1 else "CONTINUE"

    def choose_trial_to_run(self, controller: Any) -> Any:
        paused = [t for t in controller.get_trials() if t.status == "PAUSED"]
        return paused[0] if paused else None


def _cells_and_scheduler(tmp_path: Path, budget: int | None
                         ) -> tuple[CellSearcher, CellScheduler, Recording]:
    from service.core.layout import Cell

    names = [Cell(s, "resnet18@0.0625", 0).name for s in ("random", "hyperband")]
    cells = [CellTrials(n, ConcurrencyLimiter(Counting(), max_concurrent=cap), {}, {}, 9, cap)
             for n, cap in zip(names, (1, 3), strict=True)]
    searcher = CellSearcher(cells, 2, str(tmp_path), "val_acc", "max")
    recording = Recording()
    scheduler = CellScheduler(searcher, {names[0]: None, names[1]: recording},
                              {names[0]: None, names[1]: budget}, "val_acc", "max")
    return searcher, scheduler, recording


def test_each_cell_s_scheduler_sees_its_own_trials_and_offers_them_in_cell_order(
        tmp_path: Path) -> None:
    searcher, scheduler, recording = _cells_and_scheduler(tmp_path, None)
    plain, hb = [c.name for c in searcher.cells]
    assert not scheduler.supports_buffered_results  # as HyperBand's own experiment
    trials = [FakeTrial("p1", "random"), FakeTrial("h1", "hyperband", "RUNNING"),
              FakeTrial("h2", "hyperband", "RUNNING")]
    controller = FakeController(trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    assert recording.seen == [["h1", "h2"], ["h1", "h2"]]  # never the plain cell's p1
    assert scheduler.on_trial_result(controller, trials[1],
                                     {"training_iteration": 1}) == "PAUSE"
    trials[1].status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is trials[0]  # FIFO, first cell first
    trials[0].status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is trials[1]  # HyperBand's choice
    trials[1].status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is None
    assert scheduler.on_trial_result(controller, trials[0],
                                     {"training_iteration": 1}) == "CONTINUE"  # FIFO


def test_a_cell_s_epoch_budget_ends_that_cell_alone(tmp_path: Path) -> None:
    """As EpochBudgetStopper ends a multi-fidelity experiment of its own: once the cell's
    trials trained its budget, its other trials stop (paused, pending or running) and its
    searcher suggests nothing more; the other cell goes on."""
    searcher, scheduler, _ = _cells_and_scheduler(tmp_path, 4)
    plain, hb = searcher.cells
    assert [searcher.suggest(f"t{i}")["x"] for i in range(4)] == [0, 0, 1, 2]
    assert searcher.owner == {"t0": plain.name, "t1": hb.name, "t2": hb.name, "t3": hb.name}
    trials = {"t0": FakeTrial("t0", "random", "RUNNING"),
              "t1": FakeTrial("t1", "hyperband", "RUNNING"),
              "t2": FakeTrial("t2", "hyperband", "PAUSED"),
              "t3": FakeTrial("t3", "hyperband", "PENDING")}
    controller = FakeController(list(trials.values()))
    trials["t2"].last_result = {"training_iteration": 1}  # e.g. restored, paused at 1
    for trial in trials.values():
        scheduler.on_trial_add(controller, trial)
    assert scheduler.on_trial_result(controller, trials["t1"],
                                     {"training_iteration": 2}) == "CONTINUE"  # 3 of 4
    assert scheduler.on_trial_result(controller, trials["t0"],
                                     {"training_iteration": 5}) == "CONTINUE"  # no budget
    assert scheduler.on_trial_result(controller, trials["t1"],
                                     {"training_iteration": 3}) == "STOP"  # 4 of 4
    assert controller.stopped == ["t2", "t3"] and hb.exhausted and not plain.exhausted
    for trial_id in ("t2", "t3", "t1"):
        searcher.on_trial_complete(trial_id)
    assert hb.done and not plain.done
    assert searcher.suggest("t4") is None  # the plain cell is at its cap, HyperBand's done
    searcher.on_trial_complete("t0", {"val_acc": 0.5})
    assert searcher.suggest("t5")["x"] == 1  # the plain cell goes on


@pytest.fixture(scope="module")
def both(ray_session, tmp_path_factory):
    """The same cells run in one shared driver and each in its own."""
    from service.backends.tune.experiment import run_all
    from service.core.config import build_config

    out = {}
    for shared in (True, False):
        cfg = build_config({
            "name": f"shared-{shared}", "storage": str(tmp_path_factory.mktemp("shared")),
            "searchers": ["random", "asha", "hyperband"], "backbones": ["resnet18@0.0625"],
            "seeds": [0], "budget": {"trials": 3, "epochs": 3}, "concurrency": 1,
            "dataset": {"name": "synthetic", "max_train": 60}, "shared_driver": shared,
            "space": {"optimizer": ["adam", "sgd"], "lr": {"loguniform": [1e-3, 1e-2]},
                      "batch_size": 30}})
        out[shared] = (cfg, run_all(cfg, log=lambda *_: None))
    return out


def _trials(folder: Path) -> list[tuple[str, int]]:
    """(config, epochs trained) of each trial of a cell, sorted."""
    out = []
    for params in sorted(folder.glob("trial_*/params.json")):
        config = json.loads(params.read_text())
        config.pop("run")
        rows = (params.parent / "progress.csv").read_text().strip().splitlines()
        out.append((json.dumps(config, sort_keys=True), len(rows) - 1))
    return sorted(out)


def test_a_shared_driver_gives_every_cell_the_trials_of_its_own_experiment(both) -> None:
    """Random search and ASHA one trial at a time: the same trials, each stopped at the
    same epoch. HyperBand (its bracket runs trials side by side, so its order depends on
    timing): configurations from the same seeded sequence, and its epoch budget spent in
    full, as in its own experiment."""
    (cfg_shared, shared), (cfg_own, own) = both[True], both[False]
    assert not [s for s in shared + own if "failed" in s]
    assert [s.get("shared_driver", False) for s in shared] == [True] * 3
    assert not [s for s in own if s.get("shared_driver")]
    budget = cfg_own.budget.epoch_budget
    for summary in own:
        name = f"{summary['searcher']}__resnet18_w0.0625__s{summary['seed']}"
        a, b = _trials(cfg_shared.experiment_dir / name), _trials(cfg_own.experiment_dir / name)
        if summary["searcher"] == "hyperband":
            first, second = {c for c, _ in a}, {c for c, _ in b}
            assert first <= second or second <= first, name
            assert sum(e for _, e in a) == sum(e for _, e in b) == budget, (a, b)
        else:
            assert a == b, name
        for f in ("summary.json", "final_test.json"):
            assert (cfg_shared.experiment_dir / name / f).exists(), (name, f)
    assert sum(e for _, e in _trials(cfg_shared.experiment_dir / "asha__resnet18_w0.0625__s0")
               ) <= budget
    # Tune's snapshot stays small: the incremental sync keeps no file contents where Tune
    # pickles its syncer (every trial's saved state), which once made it 1.3 GB
    for state in cfg_shared.experiment_dir.glob("experiment_state-*.json"):
        assert state.stat().st_size < 2_000_000, state.stat().st_size
    by_cell = {(s["searcher"], s["seed"]): s for s in shared}
    for summary in own:
        twin = by_cell[(summary["searcher"], summary["seed"])]
        assert twin["errors"] == 0
        if summary["searcher"] != "hyperband":
            assert twin["trials"] == summary["trials"]


def test_a_shared_run_reports_like_one_of_cells_of_their_own(both) -> None:
    import pandas as pd

    from service.reports import write_report
    from service.reports.overhead import breakdown

    cfg, summaries = both[True]
    written = write_report(cfg.experiment_dir)
    trials = pd.read_csv(written["trials"])
    assert len(trials) == sum(s["trials"] for s in summaries)
    parts = breakdown(cfg.experiment_dir)
    assert parts is not None
    assert sum(parts["seconds"].values()) == pytest.approx(parts["slot_s"], rel=1e-6)
    assert parts["seconds"]["training"] > 0


def test_the_incremental_sync_copies_what_changed_and_ends_with_the_same_files(tmp_path):
    import pyarrow.fs

    from service.backends.tune.shared import changed_files, write_files

    local, remote = tmp_path / "staging", tmp_path / "storage"
    (local / "cell" / "trial_a").mkdir(parents=True)
    (local / "state.json").write_text("1")
    (local / "cell" / "trial_a" / "result.json").write_text("{}\n")
    fs = pyarrow.fs.LocalFileSystem()

    def incremental_upload(local: str, fs: object, remote: str) -> int:  # as the syncer does
        return write_files(changed_files(local, remote), fs, remote, local)

    assert incremental_upload(str(local), fs, str(remote)) == 2
    assert incremental_upload(str(local), fs, str(remote)) == 0  # nothing changed
    (local / "cell" / "trial_a" / "result.json").write_text("{}\n{}\n")
    (local / "cell" / "trial_b").mkdir()
    (local / "cell" / "trial_b" / "params.json").write_text("{}")
    assert incremental_upload(str(local), fs, str(remote)) == 2
    files = {p.relative_to(local): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert files == {p.relative_to(remote): p.read_bytes()
                     for p in remote.rglob("*") if p.is_file()}
