"""HYPERA's pure parts: positions and deltas on log, linear, integer and choice
ranges, the groups a space gives, and each coordination strategy and conflict rule on
hand-made proposals with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rllib_policies.hypera._core import (
    Proposal,
    apply_in_sequence,
    best_combination,
    config_at,
    groups_of,
    merge,
    moved,
    position,
    resolve,
    ungrouped,
    value_at,
)
from service.core.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "lr": {"loguniform": [1e-4, 1e-1]},
    "momentum": {"uniform": [0.0, 0.99]},
    "batch_size": {"int": [16, 128]},
    "optimizer": ["adam", "sgd", "rmsprop"],
    "flip": [False, True],
    "weight_decay": {"uniform": [0.0, 0.01]},
    "label_smoothing": {"uniform": [0.0, 0.2]},
    "focal_gamma": {"uniform": [0.0, 4.0]},
    "rotation": 0,
})
DIM = {d.name: d for d in SPACE.dims}


def test_log_range_moves_in_decades() -> None:
    lr = DIM["lr"]
    assert position(lr, 1e-4) == 0.0 and position(lr, 1e-1) == 1.0
    assert position(lr, 1e-2) == pytest.approx(2 / 3)
    # A full action at scale 1/3 is one decade of the three.
    assert value_at(lr, moved(position(lr, 1e-3), 1.0, 1 / 3)) == pytest.approx(1e-2)
    assert value_at(lr, moved(position(lr, 1e-3), -1.0, 1 / 3)) == pytest.approx(1e-4)


def test_linear_and_integer_ranges_and_clipping() -> None:
    mom, batch = DIM["momentum"], DIM["batch_size"]
    assert value_at(mom, moved(position(mom, 0.495), 0.5, 0.2)) == pytest.approx(0.594)
    assert value_at(mom, moved(position(mom, 0.9), 1.0, 0.5)) == 0.99  # clipped high
    assert value_at(mom, moved(0.1, -3.0, 0.2)) == 0.0  # action clipped to -1, then u
    assert value_at(batch, 0.5) == 72 and isinstance(value_at(batch, 0.5), int)
    assert value_at(batch, moved(1.0, 1.0, 0.1)) == 128


def test_choices_move_by_accumulated_position() -> None:
    opt, flip = DIM["optimizer"], DIM["flip"]
    assert position(opt, "sgd") == 0.5
    u = position(flip, False)
    for _ in range(3):  # 0.15 per step: the flag flips once the position passes 0.5
        u = moved(u, 1.0, 0.15)
        assert value_at(flip, u) is False
    u = moved(u, 1.0, 0.15)
    assert value_at(flip, u) is True
    assert value_at(opt, 0.74) == "sgd" and value_at(opt, 0.76) == "rmsprop"


def test_groups_follow_the_document_and_constants_have_no_agent() -> None:
    groups = groups_of(SPACE)
    assert groups == {
        "optimization": ("lr", "momentum", "batch_size", "optimizer", "weight_decay"),
        "regularization": ("weight_decay", "label_smoothing"),
        "data": ("flip",),
        "loss": ("label_smoothing", "focal_gamma"),
    }
    assert ungrouped(SPACE) == []
    assert config_at(SPACE, {"lr": 0.0, "flip": 1.0}) == {"lr": 1e-4, "flip": True}


A = Proposal("regularization", {"weight_decay": 1.0, "label_smoothing": -1.0}, (2.0, 2.2))
B = Proposal("optimization", {"weight_decay": -1.0, "lr": 0.5}, (1.0, 3.0))
SCALES = {"regularization": 0.2, "optimization": 0.1}
START = {"weight_decay": 0.5, "label_smoothing": 0.5, "lr": 0.5}


def test_value_arbitration_takes_the_higher_critic() -> None:
    rng = np.random.default_rng(0)
    assert resolve("weight_decay", [A, B], "value", rng) == (1.0, "regularization")
    out, winners = merge(START, [A, B], SCALES, "value", rng)
    assert out == pytest.approx({"weight_decay": 0.7, "label_smoothing": 0.3, "lr": 0.55})
    assert winners == {"weight_decay": "regularization", "label_smoothing": "regularization",
                       "lr": "optimization"}


def test_specialisation_weighting_mixes_toward_the_specialist() -> None:
    action, winner = resolve("weight_decay", [A, B], "specialisation",
                             np.random.default_rng(0))
    assert winner == "mix" and action == pytest.approx((1.0 - 0.5) / 1.5)
    out, _ = merge(START, [A, B], SCALES, "specialisation", np.random.default_rng(0))
    assert out["weight_decay"] == pytest.approx(0.5 + 0.2 / 3)  # the specialist's scale


def test_thompson_sampling_follows_value_and_uncertainty() -> None:
    rng = np.random.default_rng(1)
    sure = Proposal("a", {"x": 1.0}, (1.0, 1.0))
    unsure = Proposal("b", {"x": -1.0}, (0.0, 2.0))  # value 0, spread 2
    wins = [resolve("x", [sure, unsure], "thompson", rng)[1] for _ in range(4000)]
    # P(N(0, 2^2) > N(1, 1e-3^2)) = P(Z > 0.5) = 0.309
    assert wins.count("b") / len(wins) == pytest.approx(0.309, abs=0.03)
    far = Proposal("c", {"x": -1.0}, (-50.0, -50.0))
    assert {resolve("x", [sure, far], "thompson", rng)[1] for _ in range(50)} == {"a"}


def test_sequential_acts_on_the_previous_result() -> None:
    out = apply_in_sequence(START, [A, B], SCALES)
    # weight decay: +0.2 by regularization, then -0.1 by optimization
    assert out == pytest.approx({"weight_decay": 0.6, "label_smoothing": 0.3, "lr": 0.55})
    assert apply_in_sequence(START, [B, A], SCALES)["weight_decay"] == pytest.approx(0.6)
    edge = apply_in_sequence({"weight_decay": 0.95}, [Proposal("regularization",
                             {"weight_decay": 1.0}), Proposal("optimization",
                             {"weight_decay": -1.0})], SCALES)
    assert edge["weight_decay"] == pytest.approx(0.9)  # clipped at 1, then down 0.1


def test_cooperative_picks_the_best_weighted_sum() -> None:
    scores = np.array([[1.0, 0.0], [0.0, 0.9], [0.6, 0.6]])
    assert best_combination(scores, [1.0, 1.0]) == 2
    assert best_combination(scores, [1.0, 0.1]) == 0
    assert best_combination(scores, [0.1, 1.0]) == 1
    with pytest.raises(ValueError, match="scores must be"):
        best_combination(scores, [1.0])


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="conflict rule"):
        resolve("weight_decay", [A, B], "vote", np.random.default_rng(0))
    assert math.isfinite(A.value) and B.spread == 2.0
