"""Switches inside a trial are scored by what training would give: a late switch to the
optimum is not credited with the optimum, the simulation and the score agree, every entry
trains on the same slots within the budget, and the searcher's compute moves the clock."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from service.backends.replay.continuation import position_after_switch, read, splice
from service.backends.replay.run import score
from service.backends.replay.simulate import Simulation, replay_cell
from service.backends.replay.switches import configs_of, modelled
from service.core.api import Budget, ControllerPlan, Observation, Schedule
from service.core.table import load_table
from tests.backends.replay.tables import LRS, emerald_table

BAD = {"flip": False, "rotation": 0, "shift": False, "optimizer": "sgd", "lr": LRS[0]}
BEST = {"flip": True, "rotation": 0, "shift": True, "optimizer": "adam", "lr": LRS[2]}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_table(emerald_table(tmp_path_factory.mktemp("t") / "emerald.parquet",
                                    epochs=12))


def _hp(table, hp: dict[str, Any]) -> dict[str, Any]:
    return {n: hp[n] for n in table.names}


def _late_switch(table, epochs: int = 12) -> Schedule:
    schedule = Schedule()
    for epoch in range(1, epochs + 1):
        schedule.append(_hp(table, BAD if epoch < epochs else BEST))
    return schedule


def test_reach_continues_where_the_new_curve_reaches_the_trial_s_value() -> None:
    curve = np.array([0.2, 0.5, 0.7, 0.8, 0.85])
    assert position_after_switch("reach", curve, 5, 3, 0.6, 1.0) == 3  # 0.7 >= 0.6 at 3
    assert position_after_switch("reach", curve, 5, 3, 0.9, 1.0) == 5  # never: its best
    assert position_after_switch("reach", curve, 5, 3, 0.1, 1.0) == 1
    assert position_after_switch("reach", curve, 5, 0, math.nan, 1.0) == 0
    assert position_after_switch("epoch", curve, 5, 3, 0.6, 1.0) == 3
    assert position_after_switch("restart", curve, 5, 3, 0.6, 1.0) == 0
    loss = np.array([2.0, 1.0, 0.5])
    assert position_after_switch("reach", loss, 3, 2, 0.8, -1.0) == 3  # mode min
    assert read(curve, 5, 5, 7) == 0.85  # past a full curve: its plateau
    assert math.isnan(read(curve[:2], 2, 5, 2))  # past a curve that ended: diverged


def test_a_late_switch_to_the_optimum_is_not_credited_with_the_optimum(table) -> None:
    """11 epochs of a bad configuration, then the optimum for the last: the old model
    (`epoch`) credits the optimum's 12-epoch value; `reach` and `restart` give what one
    epoch of the good configuration from a bad state can give."""
    schedule = _late_switch(table)
    bad, best = (table.snap(_hp(table, hp))[0] for hp in (BAD, BEST))
    optimum = table.value(best, 12)
    assert modelled(table, schedule, "epoch") == pytest.approx(optimum)  # the old flaw
    for model in ("reach", "restart"):
        value = modelled(table, schedule, model)
        assert value < table.value(bad, 12) + 0.5 * (optimum - table.value(bad, 12)), model
    # reach: the optimum's curve from the first epoch where it reaches the bad one's value
    expected = []
    for s in range(len(table.seeds)):
        reached = table.metrics["val_acc"][bad, s, 10]
        curve = table.metrics["val_acc"][best, s]
        expected.append(curve[int(np.flatnonzero(curve >= reached)[0]) + 1])
    assert modelled(table, schedule, "reach") == pytest.approx(np.mean(expected))


class Scripted:
    """A controller that trains BAD and switches to BEST for the last epoch."""

    def __init__(self, space: Any, seed: int = 0, epochs: int = 12) -> None:
        self.epochs = epochs

    def decide(self, obs: Observation) -> dict[str, Any]:
        return dict(BEST if obs.epoch >= self.epochs - 1 else BAD)

    def finish(self, obs: Observation) -> None:
        pass

    def learn(self) -> dict[str, float]:
        return {}

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        return []

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass


def _scripted_plan(table) -> ControllerPlan:
    from service.backends.tune.searching import ControllerHost  # noqa: F401 (the host the plan needs)

    return ControllerPlan("scripted", 1, 12,
                          controller="tests.backends.replay.test_continuation:Scripted")


@pytest.mark.parametrize("model", ["reach", "epoch"])
def test_the_simulation_and_the_score_agree_on_a_switch(table, model) -> None:
    """The rows a switching trial reports are the spliced curve the score reads: a
    searcher sees during the replay exactly what it is scored on."""
    sim = Simulation(_scripted_plan(table), table, seed=0, slots=1, continuation=model,
                     searcher_time=False).run()
    rows, figures = score(sim, table)
    (trial_id,) = sim.state
    st = sim.state[trial_id]
    values = [r["val_acc"] for r in sim.rows]
    configs = configs_of(table, st.schedule)
    assert len(values) == 12 and configs[-1] != configs[0]
    assert values == pytest.approx(list(splice(table.metrics["val_acc"], table.lengths,
                                               st.seed, configs, model, 1.0)))
    best = table.snap(_hp(table, BEST))[0]
    if model == "epoch":
        assert values[-1] == table.metrics["val_acc"][best, st.seed, 11]
    else:
        assert values[-1] < table.metrics["val_acc"][best, st.seed, 11] - 0.15
    assert figures["in_trial"] and figures["modelled_value"] == figures["chosen_value"]


@pytest.mark.parametrize("name", ["random", "hyperband", "bohb", "pbt", "asha"])
def test_every_entry_trains_on_the_experiment_s_slots_within_its_budget(table, name) -> None:
    """At most `concurrency` epochs train at the same moment, whatever live-trial cap the
    plan needs for its paused trials, and no entry trains more than trials x epochs."""
    budget = Budget(trials=6, epochs=12)
    options = {"population": 6} if name == "pbt" else None
    for slots in (1, 3):
        sim = replay_cell(name, table, seed=2, budget=budget, options=options,
                          concurrency=slots, searcher_time=False)
        assert len(sim.rows) <= budget.epoch_budget, (name, slots)
        spans = sorted((r["unix_time"] - r["epoch_time_s"], r["unix_time"]) for r in sim.rows)
        for start, end in spans:
            mid = (start + end) / 2
            assert sum(s < mid < e for s, e in spans) <= slots, (name, slots)


def test_the_searcher_s_compute_moves_the_simulated_clock(table, monkeypatch) -> None:
    """A searcher that thinks 0.2 s per suggestion ends its cell 0.2 s x trials later than
    the same searcher without the charge, with the same results."""
    from baselines._simple import RandomSearch

    suggest = RandomSearch.suggest

    def slow(self, trial_id):
        time.sleep(0.2)
        return suggest(self, trial_id)

    monkeypatch.setattr(RandomSearch, "suggest", slow)
    budget = Budget(trials=4, epochs=3)
    free = replay_cell("random", table, seed=0, budget=budget, searcher_time=False)
    charged = replay_cell("random", table, seed=0, budget=budget)
    # the same rows, a diverged epoch's NaN included (random may draw lr 0.1 with sgd)
    np.testing.assert_array_equal([r["val_acc"] for r in free.rows],
                                  [r["val_acc"] for r in charged.rows])
    assert charged.searcher_s >= 0.8 and free.searcher_s >= 0.8
    assert charged.clock - free.clock == pytest.approx(charged.searcher_s, abs=0.05)
    assert score(charged, table)[1]["searcher_s"] == charged.searcher_s
