"""HYPERA's agents as a controller and as a searcher, on hand-fed epoch rows: who
acts when, what each decision earns, the architecture agent only at trial starts, every
coordination strategy inside the space, the entries' checks, and a restore in the middle of
a trial that gives the identical next decision."""

from __future__ import annotations

import pytest

from rllib_policies.hypera._agents import HyperaController
from rllib_policies.hypera._core import GROUPS
from service.backends import plans
from service.core.api import Budget, Observation
from service.core.registry import RegistryError
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "lr": {"loguniform": [1e-4, 1e-1]},
    "momentum": {"uniform": [0.5, 0.99]},
    "rotation": {"int": [0, 30]},
    "flip_prob": {"uniform": [0.0, 1.0]},
    "weight_decay": {"uniform": [0.0, 0.01]},
    "width": {"uniform": [0.0625, 0.25]},
    "batch_size": 32,
})
EPOCHS = 8
OPTIONS = dict(strategy="independent", conflict="value", scales="0.1,0.05,0.2,0.15,0.05",
               temperatures="1,0.5,0.7,0.8,0.6", every="10,5,7,3,5", candidates=4,
               random_starts=1, reward_scale=100.0, lr=3e-4, batch_size=16,
               replay_capacity=1000, learning_starts=4, updates_per_step=1)


def rows(*accs: float) -> list[dict]:
    return [{"val_acc": a, "train_acc": a, "val_loss": 1 - a, "train_loss": 1 - a,
             "grad_norm": 1.0, "grad_norm_std": 0.1, "epoch_time_s": 0.5} for a in accs]


def controller(seed: int = 0, **options) -> HyperaController:
    return HyperaController(SPACE, seed=seed, **{**OPTIONS, **options})


def run_trial(c: HyperaController, trial: str, accs: list[float], propose: bool = True
              ) -> list[dict]:
    """Drive one trial epoch by epoch as the trainable does; the answers per epoch."""
    answers = []
    start = c.propose(trial, EPOCHS) if propose else None
    done: list[float] = []
    for epoch in range(EPOCHS):
        obs = Observation(trial, epoch, EPOCHS, {}, rows(accs[epoch - 1]) if epoch else [])
        answers.append(c.decide(obs))
        done.append(accs[epoch])
    c.finish(Observation(trial, EPOCHS, EPOCHS, {}, rows(accs[-1])))
    c.learn()
    return [start, *answers]


def test_agents_act_on_their_own_cadence_and_earn_the_gain() -> None:
    c = controller()
    first = run_trial(c, "t0", [0.1 * (i + 1) for i in range(EPOCHS)])
    assert first[0].keys() == {"lr", "momentum", "rotation", "flip_prob", "weight_decay",
                               "width"}
    assert all("width" not in a for a in first[1:])
    # A random start: no decision at epoch 0, the in-trial agents act from their first due
    # epoch on, against the trial's own accuracy.
    assert sorted((r["agent"], r["epoch"]) for r in c.step_log()) == [
        ("data", 3), ("data", 6), ("optimization", 5), ("regularization", 7)]
    assert [r["reward"] for r in c.step_log() if r["agent"] == "data"] == pytest.approx(
        [100 * (0.6 - 0.3), 100 * (0.8 - 0.6)])
    assert c.core.incumbent["score"] == pytest.approx(0.8)
    accs = [0.15, 0.25, 0.35, 0.45, 0.5, 0.6, 0.7, 0.9]
    run_trial(c, "t1", accs)
    log = [row for row in c.step_log() if row["trial_id"] == "t1"]
    acts = sorted((row["agent"], row["epoch"]) for row in log)
    assert acts == sorted([("architecture", 0), ("optimization", 0), ("optimization", 5),
                           ("regularization", 0), ("regularization", 7), ("data", 0),
                           ("data", 3), ("data", 6)])
    by = {(row["agent"], row["epoch"]): row for row in log}
    # Trial-start decisions earn the gain over the incumbent at the epoch they close.
    assert by[("data", 0)]["reward"] == pytest.approx(100 * (0.35 - 0.3))
    assert by[("data", 3)]["reward"] == pytest.approx(100 * (0.6 - 0.35))
    assert by[("data", 6)]["reward"] == pytest.approx(100 * (0.9 - 0.6))
    assert by[("architecture", 0)]["reward"] == pytest.approx(100 * (0.9 - 0.8))
    assert all(row["terminal"] == (row["closed_epoch"] == EPOCHS) for row in log)
    assert c.core.incumbent["score"] == pytest.approx(0.9)


def test_a_diverged_epoch_ends_every_open_decision_with_the_penalty() -> None:
    c = controller()
    run_trial(c, "t0", [0.5] * EPOCHS)
    c.propose("t1", EPOCHS)
    c.decide(Observation("t1", 0, EPOCHS, {}, []))
    c.decide(Observation("t1", 1, EPOCHS, {}, [{**rows(0.1)[0], "val_acc": float("nan"),
                                                 "diverged": True}]))
    failed = [row for row in c.step_log() if row["trial_id"] == "t1"]
    assert failed and all(row["failed"] and row["reward"] == -100.0 for row in failed)
    assert {row["agent"] for row in failed} == set(GROUPS) - {"loss"}


@pytest.mark.parametrize("strategy", ["independent", "sequential", "cooperative"])
@pytest.mark.parametrize("conflict", ["value", "specialisation", "thompson"])
def test_every_strategy_and_rule_stays_inside_the_space(strategy: str, conflict: str) -> None:
    c = controller(strategy=strategy, conflict=conflict)
    for t in range(3):
        for answer in run_trial(c, f"t{t}", [0.2 + 0.05 * i for i in range(EPOCHS)]):
            for name, value in answer.items():
                dim = next(d for d in SPACE.dims if d.name == name)
                assert dim.contains(value), (name, value)
    assert len(c.step_log()) > 0


def test_restore_mid_trial_gives_the_identical_next_decision() -> None:
    c = controller()
    run_trial(c, "t0", [0.3] * EPOCHS)
    c.propose("t1", EPOCHS)
    for epoch in range(4):
        c.decide(Observation("t1", epoch, EPOCHS, {}, rows(0.4) if epoch else []))
    c.learn()
    twin = controller(seed=99)
    twin.set_state(c.get_state())
    nxt = Observation("t1", 6, EPOCHS, {}, rows(0.5, 0.55))
    assert c.decide(nxt) == twin.decide(nxt)
    assert c.propose("t2", EPOCHS) == twin.propose("t2", EPOCHS)


def test_entries_refuse_what_they_cannot_tune() -> None:
    budget = Budget(trials=2, epochs=2)
    free = SearchSpace.from_dict({"lr": {"loguniform": [1e-4, 1e-1]},
                                  "trivialaugment": [False, True], "epochs": [1, 2]})
    with pytest.raises(RegistryError, match="epochs belong to none"):
        plans.build("hypera", space=free, metric="val_acc", mode="max", seed=0,
                       budget=budget)
    with pytest.raises(RegistryError, match="option 'scales': give 5 values"):
        plans.build("hypera-search", space=SPACE, metric="val_acc", mode="max", seed=0,
                       budget=budget, options={"scales": "0.1,0.2"})
