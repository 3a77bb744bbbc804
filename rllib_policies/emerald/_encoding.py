"""EMERALD-O's state encoding, action decoding, rewards and exploration schedule as pure
functions on plain values and arrays (seed 000, sections 4.1-4.6 and 5.1), so they are tested
without Ray or RLlib.

State (Tables 3 and 5), 10 numbers per agent:
- `aug` (Agent 1): [lr, optimizer one-hot (adam, sgd, rmsprop), moving-average validation
  accuracy, moving-average training loss, augmentation multi-hot (flip, rotation, zoom, shift)]
- `opt` (Agent 2): [lr, optimizer one-hot, moving-average validation accuracy, moving-average
  training loss, previous lr, previous optimizer one-hot]

The paper normalises the learning rate linearly (0.001 -> 0.1, i.e. lr x 100); on a range of
1e-5..1e-1 that squeezes four of the five decades into [0, 0.1] and puts 0.1 at 10. The
default here is the position on the log range ((log10 lr - log10 low) / decades), which keeps
every decade equally distinguishable; `lr_scale="paper"` reproduces the paper's vector.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rllib_policies.exploration import EARLY_STOP_PENALTY, FAILURE_REWARD
from service.core.space import SearchSpace

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "rmsprop")
"""Agent 2's optimizers, EMERALD-O section 2.1 (one-hot order of Table 3)."""

AUG_FLAGS: tuple[str, ...] = ("flip", "rotation", "zoom", "shift")
"""Multi-hot order of the augmentation settings in Table 3."""

EPSILON_DECAY = 0.01
"""Decay rate of the exploration parameter, EMERALD-O section 5.1.1."""


LR_BINS_PER_DECADE = 2
"""Agent 2's learning-rate head is discretised on the log range (DQN needs a Discrete
action space): two bins per decade, 9 rates on 1e-5..1e-1."""

Combine = Literal["weighted", "product", "min"]


@dataclass(frozen=True)
class ActionSet:
    """Discrete actions of both agents, derived from the search space so EMERALD-O explores
    the same space as every other searcher."""

    aug: tuple[dict[str, Any], ...]
    opt: tuple[dict[str, Any], ...]
    lr_range: tuple[float, float]
    optimizers: tuple[str, ...]

    @classmethod
    def from_space(cls, space: SearchSpace, lr_bins_per_decade: int = LR_BINS_PER_DECADE,
                   aug_actions: str = "combinations") -> ActionSet:
        """`aug`: every combination of the searched augmentation dimensions (Table 4's none /
        flip / rotation / shift are among them), or with `aug_actions="table4"` Table 4's
        one technique at a time (`table4_actions`); `opt`: optimizer x log-spaced rate
        bins."""
        searched = {d.name: d for d in space.searched}
        aug_dims = [searched[n] for n in AUG_FLAGS if n in searched]
        if aug_actions == "table4":
            aug = table4_actions(aug_dims)
        elif aug_actions == "combinations":
            aug = tuple(
                dict(zip([d.name for d in aug_dims], values, strict=True))
                for values in itertools.product(*(aug_values(d) for d in aug_dims))
            ) or ({},)
        else:
            raise ValueError(f"aug_actions: {aug_actions!r} is not combinations or table4")
        if "optimizer" in searched:
            optimizers = tuple(searched["optimizer"].choices)
        else:
            optimizers = (space.constants.get("optimizer", "adam"),)
        lr_dim = searched.get("lr")
        if lr_dim is not None and lr_dim.kind in ("loguniform", "uniform"):
            low, high = float(lr_dim.low), float(lr_dim.high)
            decades = max(math.log10(high / low), 1e-9)
            n = max(2, int(round(decades * lr_bins_per_decade)) + 1)
            rates = tuple(float(f"{v:.6g}") for v in np.geomspace(low, high, n))
        elif lr_dim is not None:
            rates = tuple(float(v) for v in lr_dim.choices)
            low, high = min(rates), max(rates)
        else:
            rate = float(space.constants.get("lr", 1e-3))
            rates, low, high = (rate,), rate / 10, rate * 10
        opt = tuple({"optimizer": o, "lr": r} for o in optimizers for r in rates)
        choices = rates if lr_dim is not None and lr_dim.kind not in (
            "loguniform", "uniform") else None
        return cls(aug, opt, (low, high), optimizers, choices)

    lr_choices: tuple[float, ...] | None = None
    """The space's rates when it lists them (a continuous rate snaps to the nearest)."""

    @property
    def sizes(self) -> dict[str, int]:
        return {"aug": len(self.aug), "opt": len(self.opt)}

    @property
    def opt_box_dim(self) -> int:
        """The continuous head's Box: one score per optimizer (the softmax head of Fig 4,
        as scores; the largest wins) and the log learning rate (its linear head)."""
        return len(self.optimizers) + 1

    def decode(self, actions: Mapping[str, Any]) -> dict[str, Any]:
        """The trial configuration of a joint action (Agent 2's a discrete index, or a Box
        vector in [-1, 1] from the continuous head)."""
        opt = actions["opt"]
        if np.ndim(opt) == 0:
            return {**self.aug[int(actions["aug"])], **self.opt[int(opt)]}
        return {**self.aug[int(actions["aug"])], **self.decode_box(np.asarray(opt))}

    def decode_box(self, vector: np.ndarray) -> dict[str, Any]:
        """Optimizer = the largest of the first scores; rate = the last entry mapped
        linearly onto the log range (-1: low, 1: high), snapped to the space's listed rates
        if it lists them."""
        optimizer = self.optimizers[int(np.argmax(vector[:len(self.optimizers)]))]
        low, high = (math.log10(v) for v in self.lr_range)
        position = (float(np.clip(vector[-1], -1.0, 1.0)) + 1.0) / 2.0
        lr = 10 ** (low + position * (high - low))
        if self.lr_choices is not None:
            lr = min(self.lr_choices, key=lambda r: abs(math.log10(r) - math.log10(lr)))
        return {"optimizer": optimizer, "lr": float(f"{lr:.6g}")}


TABLE4_TECHNIQUES: tuple[str, ...] = ("flip", "rotation", "shift")
"""Table 4's augmentation actions besides "no augmentation": apply flip, apply rotation,
apply shift, one at a time (zoom is in Table 3's state but is no action there)."""


AUG_RANGE_POINTS = 4
"""Values an augmentation given as a numeric range (rotation {int: [0, 30]}) offers the
augmentation agent: evenly spaced from its low to its high end (0, 10, 20, 30: the ranges
EMERALD-O Figs 10-12 compare)."""


def aug_values(dim: Any) -> tuple[Any, ...]:
    """An augmentation dimension's values as actions: its choices, or points of its range."""
    if dim.kind in ("choice", "constant"):
        return tuple(dim.choices)
    return tuple(dict.fromkeys(dim.grid(AUG_RANGE_POINTS)))


def _off(dim: Any) -> Any:
    """A dimension's "not applied" value: False, or its smallest range (rotation 0)."""
    choices = list(aug_values(dim))
    return False if all(isinstance(c, bool) for c in choices) else min(choices)


def table4_actions(aug_dims: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """EMERALD-O Table 4's actions over the searched augmentation dimensions: no
    augmentation, then each technique alone; "apply rotation" once per rotation range above
    0 that the space offers (Figs 10-12 compare 10, 20 and 30). Every action sets every
    searched dimension, so one technique at a time is what trains."""
    base = {d.name: _off(d) for d in aug_dims}
    actions = [dict(base)]
    for dim in aug_dims:
        if dim.name not in TABLE4_TECHNIQUES:
            continue
        for value in aug_values(dim):
            if value != base[dim.name]:
                actions.append({**base, dim.name: value})
    return tuple(actions)


def normalize_lr(lr: float, lr_range: tuple[float, float], scale: str = "log") -> float:
    """Learning rate as a state feature (see module docstring)."""
    if scale == "paper":
        return lr * 100.0
    low, high = lr_range
    value = (math.log10(lr) - math.log10(low)) / max(math.log10(high / low), 1e-9)
    return float(min(1.0, max(0.0, value)))


def one_hot(value: str, options: Sequence[str]) -> list[float]:
    return [1.0 if value == o else 0.0 for o in options]


def aug_multi_hot(config: Mapping[str, Any]) -> list[float]:
    """Table 3's [flip, rotation, zoom, shift]; rotation counts when its range is > 0."""
    return [1.0 if config.get(name) else 0.0 for name in AUG_FLAGS]


@dataclass
class TrainingState:
    """What the agents observe: the settings in force (and before), moving averages of
    validation accuracy and training loss over completed steps."""

    lr: float = 1e-3
    optimizer: str = "adam"
    prev_lr: float = 1e-3
    prev_optimizer: str = "adam"
    augment: dict[str, Any] = field(default_factory=dict)
    ma_val_acc: float = 0.0
    ma_train_loss: float = 0.0
    steps: int = 0

    def advance(self, config: Mapping[str, Any], val_acc: float | None,
                train_loss: float | None, alpha: float) -> TrainingState:
        """The state after a completed step ran `config`: exponential moving averages with
        weight `alpha` on the new value (the first value is taken as is)."""
        ma_val, ma_loss = self.ma_val_acc, self.ma_train_loss
        if val_acc is not None and math.isfinite(val_acc):
            ma_val = val_acc if self.steps == 0 else (1 - alpha) * ma_val + alpha * val_acc
        if train_loss is not None and math.isfinite(train_loss):
            ma_loss = (train_loss if self.steps == 0
                       else (1 - alpha) * ma_loss + alpha * train_loss)
        return TrainingState(
            lr=float(config.get("lr", self.lr)),
            optimizer=str(config.get("optimizer", self.optimizer)),
            prev_lr=self.lr, prev_optimizer=self.optimizer,
            augment={k: config[k] for k in AUG_FLAGS if k in config} or self.augment,
            ma_val_acc=ma_val, ma_train_loss=ma_loss, steps=self.steps + 1,
        )


LOSS_CLIP = 10.0
"""Training losses above this are clipped in the state (a diverging step must not dominate
the network's input scale)."""


def encode(state: TrainingState, lr_range: tuple[float, float],
           optimizers: Sequence[str] = OPTIMIZERS, lr_scale: str = "log"
           ) -> dict[str, np.ndarray]:
    """The two agents' observations (Tables 3 and 5), float32."""
    loss = float(min(max(state.ma_train_loss, 0.0), LOSS_CLIP))
    base = [normalize_lr(state.lr, lr_range, lr_scale), *one_hot(state.optimizer, optimizers),
            float(state.ma_val_acc), loss]
    aug = base + aug_multi_hot(state.augment)
    opt = base + [normalize_lr(state.prev_lr, lr_range, lr_scale),
                  *one_hot(state.prev_optimizer, optimizers)]
    return {"aug": np.asarray(aug, dtype=np.float32), "opt": np.asarray(opt, dtype=np.float32)}


@dataclass(frozen=True)
class RewardSettings:
    """Reward shaping and combination (sections 4.6, 5.1.1, Table 7)."""

    combine: Combine = "weighted"
    weights: tuple[float, float] = (0.5, 0.5)
    low_acc_floor: float = 0.0
    low_acc_penalty: float = 0.0
    grad_penalty: float = 0.05
    early_stop_penalty: float = EARLY_STOP_PENALTY
    acc_scale: float = 1.0
    """Agent 1's reward unit: 1 = accuracy as a fraction; 100 = percentage points, as Fig 6
    counts "+2 for 2% improvement" (Agent 2's loss reduction stays in loss units there)."""


def agents_label(algo: str, lr_head: str) -> str:
    """What learned the agents' networks, as a warm-start file records it: the algorithm,
    with "+sac-lr" when Agent 2 is the continuous head's SAC agent."""
    return algo if lr_head == "bins" else f"{algo}+sac-lr"


WARM_EPSILON_START = 0.3
"""Exploration at the first decision of warm-started agents (ours: the paper has no warm
start); fresh agents start at 1. On both replay tables, agents pretrained on the other
table's backbone had a lower regret starting here than at 1, intervals separating
(docs/emerald-o.md, "Warm start")."""


@dataclass(frozen=True)
class EmeraldSettings:
    """Settings of EMERALD-O's agents; defaults follow the paper where it says."""

    algo: str = "dqn"
    hidden: tuple[int, ...] = (64, 32)
    lr: float = 1e-3
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay: float = EPSILON_DECAY
    epsilon_lambda: float | None = None
    """None: EMERALD-O's schedule (5.1.1). A number: Vashishtha's adaptive one, each
    decision's decay epsilon_decay + lambda Var(Q(s, .)) (never below 0), summed."""
    epsilon_horizon: int | None = None
    """With a number: the budget schedule, epsilon falling linearly from start to end over
    this many decisions, then staying at end (`budget_epsilon`); it takes precedence over
    epsilon_decay. None: EMERALD-O's fixed decay (or the adaptive schedule)."""
    ma_alpha: float = 0.3
    lr_scale: str = "log"
    rewards: RewardSettings = RewardSettings()
    batch_size: int = 16
    learning_starts: int = 4
    updates_per_step: int = 4
    warm_start: str | None = None
    """An agents file (or the folder of an earlier experiment holding one): the agents start
    from its weights; buffer, optimizers, counters and exploration start fresh."""
    aug_actions: str = "combinations"
    """Agent 1's actions: every combination of the augmentation dimensions, or "table4"
    (Table 4's none / flip / rotation / shift, one at a time)."""
    lr_head: str = "bins"
    """Agent 2's learning rate: "bins" (discrete log-spaced rates, one action with the
    optimizer, on `algo`) or "continuous" (section 4.4.2's linear output: Agent 2 is a SAC
    agent with a Box action, optimizer scores and the log rate; Agent 1 stays on `algo`)."""

    @classmethod
    def from_options(cls, *, algo: str = "dqn", combine: str = "weighted",
                     epsilon_decay: float = EPSILON_DECAY, epsilon: str = "decay",
                     epsilon_lambda: float = -1.0, epsilon_fraction: float = 0.5,
                     decisions: int | None = None, warm_start: str = "",
                     epsilon_start: float = -1.0, aug_actions: str = "combinations",
                     lr_head: str = "bins",
                     w1: float = 0.5, w2: float = 0.5, acc_scale: str = "fraction",
                     low_acc_floor: float = 0.0, low_acc_penalty: float = 0.0
                     ) -> EmeraldSettings:
        """The settings of the registry options (validated there); `decisions` is how many
        the budget affords (the budget schedule ends at `epsilon_fraction` of them);
        `epsilon_start` < 0: 1 for fresh agents, WARM_EPSILON_START for warm-started ones
        (exploration restarts either way: its counters start at 0)."""
        if epsilon_start < 0:
            epsilon_start = WARM_EPSILON_START if warm_start else 1.0
        horizon = None
        if epsilon == "budget":
            horizon = max(1, math.ceil(epsilon_fraction * (decisions or 1)))
        return cls(algo=algo, epsilon_decay=epsilon_decay,
                   epsilon_lambda=epsilon_lambda if epsilon == "adaptive" else None,
                   epsilon_horizon=horizon, epsilon_start=epsilon_start,
                   warm_start=warm_start or None, aug_actions=aug_actions, lr_head=lr_head,
                   rewards=RewardSettings(  # type: ignore[arg-type]
                       combine=combine, weights=(w1, w2),
                       acc_scale=100.0 if acc_scale == "points" else 1.0,
                       low_acc_floor=low_acc_floor, low_acc_penalty=low_acc_penalty))


def agent_rewards(before: TrainingState, val_acc: float, train_loss: float) -> tuple[float, float]:
    """Agent 1: improvement of validation accuracy over its moving average; Agent 2: reduction
    of training loss below its moving average (section 4.6). The first step has no baseline
    and measures against zero accuracy / its own loss."""
    if before.steps == 0:
        return float(val_acc), 0.0
    return float(val_acc - before.ma_val_acc), float(before.ma_train_loss - train_loss)


def grad_instability(grad_norms: Sequence[float]) -> float:
    """Coefficient of variation of the per-epoch gradient norms of a step (0 for one epoch):
    the instability the shaping penalises (section 4.6.1)."""
    values = np.asarray([g for g in grad_norms if g is not None and math.isfinite(g)], float)
    if values.size < 2 or values.mean() <= 0:
        return 0.0
    return float(values.std() / values.mean())


def combine(r1: float, r2: float, how: Combine, weights: tuple[float, float]) -> float:
    """Weighted sum (eq. 6), product (eq. 7) or minimum (eq. 8) of the agents' rewards."""
    if how == "weighted":
        return weights[0] * r1 + weights[1] * r2
    if how == "product":
        return r1 * r2
    if how == "min":
        return min(r1, r2)
    raise ValueError(f"combine: {how!r} is not one of weighted, product, min")


def shared_reward(before: TrainingState, result: Mapping[str, Any] | None,
                  settings: RewardSettings, *, failed: bool = False,
                  early_stopped: bool = False, grad_norms: Sequence[float] = ()) -> float:
    """The reward both policies learn from: combined agent rewards minus shaping penalties;
    a failed step gets FAILURE_REWARD."""
    if failed or not result:
        return FAILURE_REWARD
    val_acc, train_loss = result.get("val_acc"), result.get("train_loss")
    if val_acc is None or train_loss is None or not (
        math.isfinite(float(val_acc)) and math.isfinite(float(train_loss))
    ):
        return FAILURE_REWARD
    r1, r2 = agent_rewards(before, float(val_acc), float(train_loss))
    reward = combine(settings.acc_scale * r1, r2, settings.combine, settings.weights)
    reward -= settings.low_acc_penalty * max(0.0, settings.low_acc_floor - float(val_acc))
    reward -= settings.grad_penalty * grad_instability(grad_norms)
    if early_stopped:
        reward -= settings.early_stop_penalty
    return float(reward)


def budget_epsilon(step: int, horizon: int, *, start: float = 1.0, end: float = 0.05
                   ) -> float:
    """Exploration that fits the budget: start at step 0, falling linearly to `end` at
    `horizon` decisions (a stated fraction of those the budget affords), then `end`."""
    return float(end + (start - end) * max(0.0, 1.0 - step / max(1, horizon)))


def epsilon(step: int, *, start: float = 1.0, end: float = 0.05,
            decay: float = EPSILON_DECAY) -> float:
    """Exploration rate after `step` decisions: end + (start - end) * exp(-decay * step)."""
    return float(end + (start - end) * math.exp(-decay * step))
