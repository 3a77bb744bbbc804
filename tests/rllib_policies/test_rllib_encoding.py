"""EMERALD-O's pure functions: state layout against the paper, actions, rewards, epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rllib_policies.emerald._encoding import (
    FAILURE_REWARD,
    ActionSet,
    RewardSettings,
    TrainingState,
    combine,
    encode,
    epsilon,
    grad_instability,
    normalize_lr,
    shared_reward,
)
from service.core.space import default_space

PAPER = TrainingState(lr=1e-3, optimizer="adam", prev_lr=1e-3, prev_optimizer="adam",
                      augment={"flip": False, "rotation": 20, "zoom": False, "shift": True},
                      ma_val_acc=0.85, ma_train_loss=0.35, steps=5)


def test_state_layout_matches_table3_and_table5() -> None:
    obs = encode(PAPER, (1e-5, 1e-1), lr_scale="paper")
    # Table 3: lr 0.001 / Adam / 85% / 0.35 / [no flip, rotation, no zoom, shift]
    assert obs["aug"].tolist() == pytest.approx([0.1, 1, 0, 0, 0.85, 0.35, 0, 1, 0, 1])
    # Table 5: the same head plus the previous lr and optimizer [0.1, 1, 0, 0]
    assert obs["opt"].tolist() == pytest.approx([0.1, 1, 0, 0, 0.85, 0.35, 0.1, 1, 0, 0])
    assert obs["aug"].dtype == np.float32


def test_log_lr_scale_spreads_decades() -> None:
    assert normalize_lr(1e-3, (1e-5, 1e-1)) == pytest.approx(0.5)
    assert normalize_lr(1e-5, (1e-5, 1e-1)) == 0.0
    assert normalize_lr(1e-1, (1e-5, 1e-1)) == 1.0
    assert normalize_lr(1e-4, (1e-5, 1e-1)) - normalize_lr(1e-5, (1e-5, 1e-1)) == \
        pytest.approx(0.25)
    assert encode(PAPER, (1e-5, 1e-1))["aug"][0] == pytest.approx(0.5)


def test_action_set_covers_the_shared_space() -> None:
    actions = ActionSet.from_space(default_space())
    assert actions.sizes == {"aug": 2 * 4 * 2 * 2, "opt": 3 * 9}
    space = default_space()
    for a in range(actions.sizes["aug"]):
        for o in (0, 13, 26):
            config = actions.decode({"aug": a, "opt": o})
            assert set(config) == set(space.names)
            assert space.contains(config)
    rates = sorted({c["lr"] for c in actions.opt})
    assert rates[0] == 1e-5 and rates[-1] == pytest.approx(1e-1)
    assert rates[1] / rates[0] == pytest.approx(10 ** 0.5, rel=1e-3)
    # Table 4's principal actions are all reachable
    aug = actions.aug
    assert {"flip": False, "rotation": 0, "shift": False, "zoom": False} in aug
    assert {"flip": True, "rotation": 0, "shift": False, "zoom": False} in aug
    assert {"flip": False, "rotation": 20, "shift": False, "zoom": False} in aug
    assert {"flip": False, "rotation": 0, "shift": True, "zoom": False} in aug


def test_table4_actions_apply_one_technique_at_a_time() -> None:
    """Table 4: no augmentation, flip, rotation (at each of Figs 10-12's ranges the space
    offers), shift; zoom is state, not an action. The state layout does not change."""
    space = default_space()  # rotation 0 / 10 / 20 / 30 (Figs 10-12), zoom searched too
    actions = ActionSet.from_space(space, aug_actions="table4")
    off = {"flip": False, "rotation": 0, "shift": False, "zoom": False}
    assert list(actions.aug) == [off, {**off, "flip": True}, {**off, "rotation": 10},
                                 {**off, "rotation": 20}, {**off, "rotation": 30},
                                 {**off, "shift": True}]
    assert actions.sizes == {"aug": 6, "opt": 27}
    assert all(space.contains(actions.decode({"aug": a, "opt": 0})) for a in range(6))
    obs = encode(PAPER, actions.lr_range)
    assert obs["aug"].shape == (10,) and obs["opt"].shape == (10,)
    with pytest.raises(ValueError, match="combinations or table4"):
        ActionSet.from_space(space, aug_actions="table5")


def test_the_continuous_head_decodes_optimizer_scores_and_a_log_rate() -> None:
    """Section 4.4.2: the optimizer is the largest score, the rate the last entry of the Box
    mapped linearly onto the log range; a space that lists its rates snaps to them."""
    actions = ActionSet.from_space(default_space())  # lr log-uniform 1e-5..1e-1
    assert actions.opt_box_dim == 4
    decoded = actions.decode({"aug": 0, "opt": np.array([0.1, 0.9, -0.3, 0.0])})
    assert decoded["optimizer"] == "sgd" and decoded["lr"] == pytest.approx(1e-3)
    assert actions.decode_box(np.array([1, 0, 0, -1.0]))["lr"] == pytest.approx(1e-5)
    assert actions.decode_box(np.array([0, 0, 1, 1.0])) == {"optimizer": "rmsprop",
                                                            "lr": pytest.approx(0.1)}
    listed = ActionSet.from_space(default_space().with_overrides(
        lr={"choice": [1e-4, 1e-3, 1e-2]}))
    assert listed.decode_box(np.array([1, 0, 0, 0.2]))["lr"] == 1e-3  # 10^-2.6 -> 1e-3
    assert listed.decode_box(np.array([1, 0, 0, 0.9]))["lr"] == 1e-2


def test_reward_weights_scale_and_low_accuracy_penalty() -> None:
    """Eq. 6's w1, w2; Fig 6's points (+2 for 2%); section 4.6.1's low-accuracy penalty."""
    before = TrainingState(ma_val_acc=0.85, ma_train_loss=0.35, steps=3)
    result = {"val_acc": 0.87, "train_loss": 0.32}
    r = shared_reward(before, result, RewardSettings(weights=(1.0, 1.0), grad_penalty=0.0))
    assert r == pytest.approx(0.02 + 0.03)
    r = shared_reward(before, result, RewardSettings(weights=(1.0, 1.0), grad_penalty=0.0,
                                                     acc_scale=100.0))
    assert r == pytest.approx(2.0 + 0.03)  # Fig 6: +2 for agent 1, +0.03 for agent 2
    low = {"val_acc": 0.3, "train_loss": 0.32}
    plain = shared_reward(before, low, RewardSettings(grad_penalty=0.0))
    penalised = shared_reward(before, low, RewardSettings(
        grad_penalty=0.0, low_acc_floor=0.5, low_acc_penalty=2.0))
    assert plain - penalised == pytest.approx(2.0 * (0.5 - 0.3))


def test_action_set_with_constant_optimizer() -> None:
    space = default_space().with_overrides(optimizer="sgd")
    actions = ActionSet.from_space(space)
    assert {c["optimizer"] for c in actions.opt} == {"sgd"}


@pytest.mark.parametrize(("how", "expected"), [("weighted", 0.5 * 0.2 + 0.5 * -0.1),
                                               ("product", 0.2 * -0.1), ("min", -0.1)])
def test_reward_combinations_table7(how: str, expected: float) -> None:
    assert combine(0.2, -0.1, how, (0.5, 0.5)) == pytest.approx(expected)


def test_combine_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="weighted, product, min"):
        combine(0.1, 0.1, "sum", (0.5, 0.5))  # type: ignore[arg-type]


def test_shared_reward_parts() -> None:
    s = RewardSettings(grad_penalty=0.0)
    result = {"val_acc": 0.9, "train_loss": 0.3}
    # aug: 0.9 - 0.85; opt: 0.35 - 0.3
    assert shared_reward(PAPER, result, s) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert shared_reward(PAPER, result, s, failed=True) == FAILURE_REWARD
    assert shared_reward(PAPER, {"val_acc": math.nan, "train_loss": 1.0}, s) == FAILURE_REWARD
    assert shared_reward(PAPER, None, s) == FAILURE_REWARD
    early = shared_reward(PAPER, result, s, early_stopped=True)
    assert early == pytest.approx(0.05 - s.early_stop_penalty)
    low = RewardSettings(grad_penalty=0.0, low_acc_floor=0.95, low_acc_penalty=2.0)
    assert shared_reward(PAPER, result, low) == pytest.approx(0.05 - 2.0 * 0.05)
    shaky = RewardSettings(grad_penalty=1.0)
    steady = shared_reward(PAPER, result, shaky, grad_norms=[1.0, 1.0, 1.0])
    unsteady = shared_reward(PAPER, result, shaky, grad_norms=[0.1, 5.0, 0.1])
    assert steady == pytest.approx(0.05) and unsteady < steady


def test_grad_instability() -> None:
    assert grad_instability([2.0]) == 0.0
    assert grad_instability([1.0, 1.0]) == 0.0
    assert grad_instability([1.0, 3.0]) == pytest.approx(0.5)
    assert grad_instability([1.0, math.nan, 3.0]) == pytest.approx(0.5)


def test_epsilon_schedule_decay_001() -> None:
    assert epsilon(0) == pytest.approx(1.0)
    assert epsilon(100) == pytest.approx(0.05 + 0.95 * math.exp(-1.0))
    values = [epsilon(t) for t in range(0, 1000, 50)]
    assert values == sorted(values, reverse=True)
    assert epsilon(10_000) == pytest.approx(0.05)


def test_moving_averages_advance() -> None:
    state = TrainingState()
    state = state.advance({"lr": 1e-2, "optimizer": "sgd", "flip": True}, 0.5, 1.0, 0.3)
    assert (state.ma_val_acc, state.ma_train_loss, state.steps) == (0.5, 1.0, 1)
    assert state.prev_lr == 1e-3 and state.lr == 1e-2 and state.optimizer == "sgd"
    state = state.advance({"lr": 1e-3}, 1.0, 0.0, 0.3)
    assert state.ma_val_acc == pytest.approx(0.65)
    assert state.ma_train_loss == pytest.approx(0.7)
    assert state.prev_lr == 1e-2 and state.augment == {"flip": True}


def test_an_augmentation_given_as_a_range_offers_points_of_it() -> None:
    """rotation {int: [0, 30]} (a user table's integer column read as a range): the
    augmentation agent chooses among 0, 10, 20, 30 instead of finding no action at all."""
    from rllib_policies.emerald._encoding import ActionSet, table4_actions
    from service.core.space import SearchSpace

    space = SearchSpace.from_dict({"flip": [False, True], "rotation": {"int": [0, 30]},
                                   "optimizer": ["adam"], "lr": {"loguniform": [1e-4, 1e-2]}})
    actions = ActionSet.from_space(space)
    rotations = sorted({a["rotation"] for a in actions.aug})
    assert rotations == [0, 10, 20, 30] and all(type(r) is int for r in rotations)
    assert len(actions.aug) == 8
    dims = [d for d in space.searched if d.name in ("flip", "rotation")]
    assert [a["rotation"] for a in table4_actions(dims)] == [0, 0, 10, 20, 30]
