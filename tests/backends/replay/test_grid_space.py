"""`replay.space`: by default every searcher searches the table's recorded values (sorted
choices), so nothing is snapped and all searchers see one space; "continuous" keeps the
table's ranges and snaps; PB2 keeps its continuous bounds in either mode."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from ray.tune.search import sample

from service.backends.replay.run import run_replay, score
from service.backends.replay.simulate import ReplayError, Simulation, plan_space, replay_cell
from service.backends.tune.spaces import to_tune
from service.core import registry
from service.core.api import Budget, ConfigError, Schedule
from service.core.config import ReplayConfig, build_config
from service.core.space import SearchSpace
from service.core.table import load_table, read_frame, write_table
from service.reports import write_report
from service.reports.compare import space_sentence
from tests.backends.replay.tables import LRS, emerald_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_table(emerald_table(tmp_path_factory.mktemp("t") / "emerald.parquet"))


def _raw(table, tmp_path, **replay) -> dict:
    return {"name": "g", "storage": str(tmp_path), "backend": "replay",
            "replay": {"tables": [table.path], "workers": 1, **replay},
            "searchers": ["optuna", "pb2"], "searcher_options": {"pb2": {"population": 4}},
            "budget": {"trials": 4, "epochs": 6}, "seeds": [0]}


def _assert_recorded(sim: Simulation, table) -> None:
    """Every configuration a trial ran is a recorded one, value and type."""
    grid = table.grid_space()
    for trial in sim.trials:
        for dim in grid.searched:
            if dim.name in trial.config:
                assert dim.contains(trial.config[dim.name]), (dim, trial.config)
    for row in sim.rows:
        hp = sim.table.config_dict(row["config"])
        assert {n: row[f"hp_{n}"] for n in table.names} == hp


def test_grid_is_the_default(table, tmp_path) -> None:
    assert ReplayConfig().space == "grid"
    cfg = build_config(_raw(table, tmp_path))
    assert cfg.replay.space == "grid"
    assert build_config(_raw(table, tmp_path, space="continuous")).replay.space == "continuous"
    with pytest.raises(ConfigError, match="replay.space"):
        build_config(_raw(table, tmp_path, space="snapped"))


def test_grid_space_holds_the_recorded_values_in_order(table) -> None:
    grid = table.grid_space()
    assert grid.names == table.space.names
    assert grid["lr"].kind == "choice" and grid["lr"].choices == LRS  # log points, ascending
    assert grid["rotation"].choices == (0, 20)
    assert grid["flip"].choices == (False, True)
    # no order to keep among strings: the space's own, the one RL agents were learned on
    assert grid["optimizer"].choices == table.space["optimizer"].choices
    # the controller host sends space.to_dict() across: it must come back the same
    assert SearchSpace.from_dict(json.loads(json.dumps(grid.to_dict())), free=True) == grid
    tune = to_tune(grid)
    assert isinstance(tune["lr"], sample.Categorical)
    assert list(tune["lr"].categories) == list(LRS)


def test_grid_space_keeps_constants_and_fixes_one_value_ranges(table, tmp_path) -> None:
    """A constant stays; a range the table recorded at one value becomes a constant."""
    frame, meta = read_frame(table.path)
    frame = frame[frame["flip"] & (frame["lr"] == LRS[2])]
    meta.space = {**meta.space, "flip": True, "lr": {"uniform": [0.0, 1.0]}}
    grid = load_table(write_table(frame, meta, tmp_path / "one.parquet")).grid_space()
    assert grid["flip"].kind == "constant" and grid["flip"].choices == (True,)
    assert grid["lr"].kind == "constant" and grid["lr"].choices == (LRS[2],)
    assert set(grid.constants) == {"flip", "lr"}
    assert grid.names == ("flip", "rotation", "shift", "optimizer", "lr")


@pytest.mark.parametrize("name", ["optuna", "random", "hyperopt"])
def test_grid_mode_snaps_nothing(table, name) -> None:
    sim = replay_cell(name, table, seed=0, budget=Budget(trials=8, epochs=6))
    assert sim.lookups >= 8 and sim.snapped == 0
    _assert_recorded(sim, table)
    assert len({t.config["lr"] for t in sim.trials}) > 1
    assert score(sim, table)[1]["space"] == "grid"


def test_continuous_mode_keeps_the_ranges_and_snaps(table) -> None:
    assert table.space["lr"].kind == "loguniform"
    assert plan_space("optuna", table, "continuous") is table.space
    sim = replay_cell("optuna", table, seed=0, budget=Budget(trials=8, epochs=6),
                      space="continuous")
    assert sim.snapped > 0
    assert any(t.config["lr"] not in LRS for t in sim.trials)
    assert score(sim, table)[1]["space"] == "continuous"
    with pytest.raises(ReplayError, match="replay.space"):
        replay_cell("optuna", table, seed=0, budget=Budget(trials=2, epochs=6),
                    space="snapped")


def test_pb2_keeps_its_continuous_bounds_in_grid_mode(table) -> None:
    assert plan_space("pb2", table, "grid") is table.space
    assert not table.grid_space().to_pb2_bounds()  # what PB2 would be left with
    sim = replay_cell("pb2", table, seed=0, budget=Budget(trials=4, epochs=6),
                      options={"population": 4})
    rows, figures = score(sim, table)
    assert rows and math.isfinite(figures["final_regret"]) and figures["space"] == "grid"
    assert sim.snapped > 0  # its suggestions are snapped, and counted


def test_pbt_moves_between_recorded_values(table) -> None:
    """PBT shifts a list choice to a neighbouring value: on the ordered grid it explores
    recorded values only."""
    sim = replay_cell("pbt", table, seed=1, budget=Budget(trials=8, epochs=6),
                      options={"population": 8, "perturbation_interval": 2}, concurrency=8)
    assert sim.snapped == 0
    grid = table.grid_space()
    changed = 0
    for st in sim.state.values():
        changed += len(st.schedule.runs) > 1
        for _, hp in st.schedule.runs:
            assert grid.contains(hp) and not table.snap(hp)[1], hp
    assert changed, "PBT never exploited"


def test_a_row_of_a_trial_cloned_over_is_scored_by_its_own_history(table) -> None:
    """PBT may clone a donor into a trial after the trial's best row (more often on the
    grid, where it moves to neighbouring values): that row is scored by the schedule that
    produced it, not by the trial's later history."""
    from service.backends.replay.continuation import splice
    from service.backends.replay.switches import configs_of

    sim = replay_cell("pbt", table, seed=1, budget=Budget(trials=8, epochs=6),
                      options={"population": 8, "perturbation_interval": 2}, concurrency=8)
    stale = [r for r in sim.rows if math.isfinite(r["val_acc"]) and r["schedule"] !=
             sim.state[r["trial_id"]].schedule.upto(r["epoch"]).to_json()]
    assert stale, "no trial was cloned over after a row"
    sim.rows = [stale[0]]  # score that row alone: it is the chosen one
    figures = score(sim, table)[1]
    own = Schedule.from_json(stale[0]["schedule"])
    assert figures["chosen_schedule"] == json.loads(own.to_json())
    configs = configs_of(table, own)
    expected = [splice(table.metrics["val_acc"], table.lengths, s, configs, sim.continuation,
                       table.sign)[-1] for s in range(len(table.seeds))]
    assert figures["chosen_value"] == pytest.approx(sum(expected) / len(expected))


def test_a_controller_is_hosted_over_the_grid(table) -> None:
    sim = replay_cell("emerald-dynamic", table, seed=0, budget=Budget(trials=3, epochs=4))
    assert sim.host.hosted.space == table.grid_space()
    assert sim.snapped == 0


def test_every_entry_that_ran_still_runs_in_grid_mode(table) -> None:
    ran: dict[str, set[str]] = {}
    refused: dict[str, set[str]] = {}
    for mode in ("continuous", "grid"):
        ran[mode], refused[mode] = set(), set()
        for name, entry in registry.entries().items():
            options = {"population": 4} if entry.kind == "population" else None
            try:
                sim = replay_cell(name, table, seed=0, budget=Budget(trials=4, epochs=3),
                                  options=options, space=mode)
            except ReplayError:
                refused[mode].add(name)
                continue
            rows, figures = score(sim, table)
            assert rows and math.isfinite(figures["final_regret"]), (mode, name)
            assert figures["final_regret"] >= 0 or figures["in_trial"], (mode, name)
            if figures["failed"]:
                assert figures["normalised_regret"] == 1.0, (mode, name)
            if mode == "grid" and name != "pb2":
                assert sim.snapped == 0, name
            ran[mode].add(name)
    assert ran["grid"] == ran["continuous"] and refused["grid"] == refused["continuous"]
    assert {"emerald", "emerald-dynamic", "pbt", "pb2", "hyperband", "bohb", "optuna",
            "hypera", "layerwise", "adaptive-q"} <= ran["grid"]


def test_cells_and_report_say_which_space_ran(table, tmp_path) -> None:
    for mode in ("grid", "continuous"):
        cfg = build_config({**_raw(table, tmp_path, space=mode), "name": mode})
        summaries = run_replay(cfg, log=lambda *_: None)
        assert {s["space"] for s in summaries} == {mode}
        assert not [s for s in summaries if "skipped" in s or s.get("failed")]
        text = write_report(cfg.experiment_dir)["comparison"].read_text()
        assert f"Searched space (`replay.space`): {mode}:" in text
    optuna = {m: json.loads(next((tmp_path / m).glob("optuna__*/summary.json")).read_text())
              for m in ("grid", "continuous")}
    assert optuna["grid"]["snapped"] == 0 < optuna["continuous"]["snapped"]


def test_space_sentence_of_old_and_mixed_cells() -> None:
    old = pd.DataFrame({"searcher": ["a"], "final_regret": [0.1]})
    assert space_sentence(old).startswith("Searched space (`replay.space`): continuous:")
    mixed = pd.DataFrame({"space": ["grid", None, "grid"]})
    text = space_sentence(mixed)
    assert text.startswith("Searched spaces differ") and "grid:" in text \
        and "continuous:" in text
