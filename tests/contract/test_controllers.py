"""The controller contract, over every registry entry whose plan is a `ControllerPlan`:
driven through real epochs of a small backbone by the real trial loop (in this process, no
Ray), its decisions stay inside the space, failed steps are penalised, a restored
controller gives the identical next decision, and the schedule the trial recorded replays to
the same result rows. The host refuses answers outside the space."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.backends import plans
from service.backends.tune.searching import (
    ControllerError,
    ControllerHost,
    HostedController,
    check_answer,
)
from service.backends.tune.trainable import RunSettings, replay, train_loop
from service.core import registry
from service.core.api import Budget, ControllerPlan, Observation, Schedule
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "flip": [False, True],
    "rotation": [0, 10],
    "optimizer": ["adam", "sgd"],
    "lr": {"loguniform": [1e-4, 1e-1]},
    "batch_size": 32,
})
EPOCHS = 3
CONTROLLERS = [name for name, e in registry.entries().items() if e.kind == "controller"]
RUN = RunSettings(backbone="resnet18@0.0625", epochs=EPOCHS, seed=0,
                  dataset={"name": "synthetic", "max_train": 96})


def host_for(name: str, seed: int = 0) -> ControllerHost:
    plan = plans.build(name, space=SPACE, metric="val_acc", mode="max", seed=seed,
                          budget=Budget(trials=2, epochs=EPOCHS))
    assert isinstance(plan, ControllerPlan)
    host = ControllerHost(plan, SPACE, in_process=True)
    host.suggest("warm")  # builds the controller
    return host


def run_trial(host: ControllerHost, trial_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    run = RunSettings(**{**RUN.as_dict(), "controller": host.name})
    train_loop({"batch_size": 32, "run": run.as_dict()}, trial_id=trial_id,
               report=lambda row, state: rows.append(row))
    return rows


def answer_space(name: str) -> SearchSpace:
    """Where a controller's decisions must lie: the searched space, with the dimensions it
    declares as its own (`ControllerPlan.controls`) in place of the space's."""
    plan = plans.build(name, space=SPACE, metric="val_acc", mode="max", seed=0,
                          budget=Budget(trials=2, epochs=EPOCHS))
    if plan.controls is None:
        return SPACE
    own = SearchSpace.from_dict(plan.controls)
    return SearchSpace(SPACE.without(*own.names).dims + own.dims)


@pytest.fixture(scope="module", params=CONTROLLERS)
def driven(request) -> tuple[str, ControllerHost, list[dict[str, Any]]]:
    host = host_for(request.param)
    return request.param, host, run_trial(host, "t0")


def test_there_is_a_controller_entry() -> None:
    assert "emerald-dynamic" in CONTROLLERS


def test_decisions_stay_inside_the_space(driven) -> None:
    name, _, rows = driven
    space = answer_space(name)
    assert len(rows) == EPOCHS
    for row in rows:
        hp = {d.name: row[f"hp_{d.name}"] for d in space.dims}
        hp["flip"] = bool(hp["flip"])
        assert space.contains(hp), hp
        assert row["controller_wait_s"] >= 0


def test_a_failed_step_is_penalised(driven) -> None:
    name, host, _ = driven
    controller = host.hosted.controller
    hp = {"optimizer": "adam", "lr": 1e-3}
    good = {"val_acc": 0.9, "val_loss": 0.3, "train_loss": 0.2, "grad_norm": 1.0,
            "diverged": False}
    bad = {"val_acc": math.nan, "val_loss": math.nan, "train_loss": math.nan,
           "grad_norm": math.nan, "diverged": True}
    for trial, last in (("ok", good), ("nan", bad)):
        controller.decide(Observation(trial, 0, EPOCHS, hp, []))
        controller.finish(Observation(trial, 1, EPOCHS, hp, [last]))
    controller.learn()
    log = {row["trial_id"]: row for row in controller.step_log()}
    assert log["nan"]["failed"] and not log["ok"]["failed"]
    assert log["nan"]["reward"] < log["ok"]["reward"], f"{name}: failure not penalised"
    # An errored trial (no last step at all) closes as a failure too.
    controller.decide(Observation("err", 0, EPOCHS, hp, []))
    host.on_trial_complete("err", error=True)
    assert controller.step_log()[-1]["failed"]


def test_restore_gives_the_identical_next_decision(driven, tmp_path) -> None:
    name, host, rows = driven
    path = str(tmp_path / "controller.pkl")
    host.save(path)
    twin = host_for(name, seed=17)  # another seed: only the restored state can agree
    twin.restore(path)
    obs = Observation("next", 0, EPOCHS, {"optimizer": "adam", "lr": 1e-3}, [])
    assert host.hosted.decide(obs) == twin.hosted.decide(obs)
    later = Observation("next", 1, EPOCHS, {"optimizer": "adam", "lr": 1e-3}, rows[:1])
    assert host.hosted.decide(later) == twin.hosted.decide(later)


def test_the_schedule_replays_to_the_same_rows(driven) -> None:
    _, _, rows = driven
    schedule = Schedule.from_json(rows[-1]["schedule"])
    assert len(schedule) == EPOCHS
    replayed = [row for _, row, _ in replay({"batch_size": 32, "run": RUN.as_dict()},
                                            schedule)]
    keys = ("val_acc", "val_loss", "train_loss", "train_acc")
    assert len(replayed) == len(rows)
    for got, want in zip(replayed, rows, strict=True):
        assert [got[k] for k in keys] == pytest.approx([want[k] for k in keys], rel=1e-6)
    assert [r["hp_optimizer"] for r in replayed] == [r["hp_optimizer"] for r in rows]


class _Rogue:
    """A controller that answers a learning rate outside the space."""

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space

    def decide(self, obs: Observation) -> dict[str, Any]:
        return {"lr": 5.0}


def test_an_answer_outside_the_space_is_a_clear_error(monkeypatch) -> None:
    with pytest.raises(ControllerError, match=r"controller 'x' answered lr=5.0, outside"):
        check_answer("x", SPACE, {"lr": 5.0})
    with pytest.raises(ControllerError, match="'momentum' is not searched"):
        check_answer("x", SPACE, {"momentum": 0.5})
    with pytest.raises(ControllerError, match="expected a mapping"):
        check_answer("x", SPACE, ["lr"])
    assert check_answer("x", SPACE, {"optimizer": "sgd", "rotation": 10}) == \
        {"optimizer": "sgd", "rotation": 10}
    import tests.contract.test_controllers as me

    hosted = HostedController("rogue", "tests.contract.test_controllers:_Rogue", {},
                              SPACE.to_dict(), 0)
    assert isinstance(hosted.controller, me._Rogue)
    with pytest.raises(ControllerError, match="'rogue' answered lr=5.0"):
        hosted.decide(Observation("t", 0, 1, {}, []))
