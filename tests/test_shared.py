"""Several cells in one Tune driver (service.shared): each cell gets exactly the trials it
would get in a Tune experiment of its own, cells open in order, and a resumed driver picks
up every cell's searcher where it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import ConcurrencyLimiter, Searcher

from service.shared import LOAD_FILE, CellSearcher, CellTrials, open_cells


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


def test_the_registry_says_which_plans_have_a_scheduler() -> None:
    from service import registry
    from service.api import Budget
    from service.space import default_space

    space = default_space()
    for name, entry in registry.entries().items():
        if entry.kind != "searcher":
            assert not entry.shares_driver()
            continue
        settings = [{}] + ([{entry.scheduler: False}, {entry.scheduler: True}]
                           if isinstance(entry.scheduler, str) else [])
        for options in settings:
            plan = registry.build(name, space=space, metric="val_acc", mode="max", seed=0,
                                  budget=Budget(trials=4, epochs=3), options=options)
            assert entry.has_scheduler(options) == (plan.scheduler is not None), (name, options)
            assert entry.shares_driver(options) == (plan.scheduler is None), (name, options)


@pytest.fixture(scope="module")
def both(ray_session, tmp_path_factory):
    """The same cells run in one shared driver and each in its own."""
    from service.config import build_config
    from service.experiment import run_all

    out = {}
    for shared in (True, False):
        cfg = build_config({
            "name": f"shared-{shared}", "storage": str(tmp_path_factory.mktemp("shared")),
            "searchers": ["random", "grid", "asha"], "backbones": ["resnet18@0.0625"],
            "seeds": [0, 1], "budget": {"trials": 3, "epochs": 1}, "concurrency": 1,
            "dataset": {"name": "synthetic", "max_train": 60}, "shared_driver": shared,
            "space": {"optimizer": ["adam", "sgd"], "lr": {"loguniform": [1e-3, 1e-2]},
                      "batch_size": 30}})
        out[shared] = (cfg, run_all(cfg, log=lambda *_: None))
    return out


def _configs(folder: Path) -> list[str]:
    configs = []
    for params in sorted(folder.glob("trial_*/params.json")):
        config = json.loads(params.read_text())
        config.pop("run")
        configs.append(json.dumps(config, sort_keys=True))
    return sorted(configs)


def test_a_shared_driver_gives_every_cell_the_trials_of_its_own_experiment(both) -> None:
    (cfg_shared, shared), (cfg_own, own) = both[True], both[False]
    assert not [s for s in shared + own if "failed" in s]
    assert sorted(s.get("shared_driver", False) for s in shared) == [False] * 2 + [True] * 4
    assert not [s for s in own if s.get("shared_driver")]
    for summary in own:
        name = f"{summary['searcher']}__resnet18_w0.0625__s{summary['seed']}"
        a, b = cfg_shared.experiment_dir / name, cfg_own.experiment_dir / name
        assert _configs(a) == _configs(b) and len(_configs(a)) == 3, name
        for f in ("summary.json", "final_test.json"):
            assert (a / f).exists(), (name, f)
    # Tune's snapshot stays small: the incremental sync keeps no file contents where Tune
    # pickles its syncer (every trial's saved state), which once made it 1.3 GB
    for state in cfg_shared.experiment_dir.glob("experiment_state-*.json"):
        assert state.stat().st_size < 2_000_000, state.stat().st_size
    by_cell = {(s["searcher"], s["seed"]): s for s in shared}
    for summary in own:
        twin = by_cell[(summary["searcher"], summary["seed"])]
        assert twin["trials"] == summary["trials"] and twin["errors"] == 0


def test_a_shared_run_reports_like_one_of_cells_of_their_own(both) -> None:
    import pandas as pd

    from service.reports import write_report
    from service.reports.overhead import breakdown

    cfg, _ = both[True]
    written = write_report(cfg.experiment_dir)
    trials = pd.read_csv(written["trials"])
    assert len(trials) == 6 * 3
    parts = breakdown(cfg.experiment_dir)
    assert parts is not None
    assert sum(parts["seconds"].values()) == pytest.approx(parts["slot_s"], rel=1e-6)
    assert parts["seconds"]["training"] > 0


def test_the_incremental_sync_copies_what_changed_and_ends_with_the_same_files(tmp_path):
    import pyarrow.fs

    from service.shared import changed_files, write_files

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
