"""HYPERA, the parts without a learner: hyperparameter groups, continuous
deltas on normalised positions, and the coordinator's merge and conflict rules. Pure numpy,
so every rule is tested on hand-made proposals.

A searched dimension has a position u in [0, 1]: linear in its range, logarithmic for a log
range, the ordinal index over (n - 1) for a choice (in the order the space lists it; a bool
is a two-value choice). An agent's action is a vector in [-1, 1], one coordinate per
dimension of its group; the dimension moves by u <- clip(u + scale * a, 0, 1) and takes the
value at u (rounded for integers, the nearest index for choices). Positions, not values,
are what persist between decisions, so small deltas on a choice accumulate until the
nearest index changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.space import LAYER_HPARAMS, Dim, SearchSpace

GROUPS: tuple[str, ...] = ("architecture", "optimization", "regularization", "data", "loss")
"""HYPERA's five agents, in its order (also the sequential strategy's order)."""

GROUP_HPARAMS: dict[str, tuple[str, ...]] = {
    # Width, and the per-layer sizes of a layered backbone ("depth where a backbone allows").
    "architecture": ("width", *LAYER_HPARAMS),
    # HYPERA: learning rate, momentum, weight decay, batch size; the optimizer itself.
    "optimization": ("lr", "momentum", "batch_size", "optimizer", "weight_decay"),
    # HYPERA: dropout, L1/L2 strengths (weight decay), and label smoothing.
    "regularization": ("weight_decay", "dropout", "label_smoothing"),
    # Augmentation magnitudes and probabilities; the flags of EMERALD-O's tables as choices.
    "data": ("rotation", "shift_frac", "zoom_frac", "flip_prob", "flip", "shift", "zoom",
             "trivialaugment"),
    # Focal-loss gamma; label smoothing is a loss parameter too.
    "loss": ("focal_gamma", "label_smoothing"),
}
"""Which agents manage which catalogue names. A name in two groups (weight decay: the
document lists it under optimization and, as L2 strength, under regularization; label
smoothing: regularization and loss) is a conflict the coordinator resolves; `PRIMARY`
names its specialist."""

PRIMARY: dict[str, str] = {"weight_decay": "regularization",
                           "label_smoothing": "regularization"}
"""The specialist group of a name two groups manage (specialisation weighting)."""

SPECIALIST_WEIGHT = 1.0
OTHER_WEIGHT = 0.5
"""Specialisation-aware weighting: a specialist's delta counts twice another agent's."""


@dataclass(frozen=True)
class AgentConfig:
    """One agent's settings from HYPERA ("Agent-Specific Hyperparameters")."""

    scale: float  # action scale: the largest move per decision, in normalised position
    temperature: float  # SAC's initial entropy coefficient alpha ("exploration temperature")
    every: int  # acts every N decision steps (epochs; the architecture agent: epochs, at
    # the next trial start, since a running model cannot change)


DOCUMENT_AGENTS: dict[str, AgentConfig] = {
    "architecture": AgentConfig(0.1, 1.0, 10),
    "optimization": AgentConfig(0.05, 0.5, 5),
    "regularization": AgentConfig(0.2, 0.7, 7),
    "data": AgentConfig(0.15, 0.8, 3),
    "loss": AgentConfig(0.05, 0.6, 5),
}
"""HYPERA, per agent: action scale / exploration temperature / update frequency."""

SCALE_FACTOR = 4.0
"""Our default action scales are the document's x 4: at its own (at most 0.05 of the
learning rate's log range per decision) a 20-trial search barely leaves its first point;
x 4 tied or beat random search on the replay tables, the document's scales lost to it
(`:paper` in the replay-hypera preset)."""

DEFAULT_AGENTS: dict[str, AgentConfig] = {
    g: AgentConfig(min(1.0, c.scale * SCALE_FACTOR), c.temperature, c.every)
    for g, c in DOCUMENT_AGENTS.items()}
"""The entries' defaults: HYPERA's temperatures and cadences, scales x 4."""


def groups_of(space: SearchSpace, groups: Mapping[str, Sequence[str]] | None = None
              ) -> dict[str, tuple[str, ...]]:
    """Each group's searched dimensions (in the space's order); groups with none are left
    out (they have no agent). `groups` replaces the catalogue's (a user's own names)."""
    table = GROUP_HPARAMS if groups is None else check_groups(groups)
    searched = [d.name for d in space.searched]
    out = {g: tuple(n for n in searched if n in table.get(g, ())) for g in GROUPS}
    return {g: names for g, names in out.items() if names}


def ungrouped(space: SearchSpace, groups: Mapping[str, Sequence[str]] | None = None
              ) -> list[str]:
    """Searched dimensions no agent manages (the entry refuses such a space)."""
    table = GROUP_HPARAMS if groups is None else check_groups(groups)
    managed = {n for names in table.values() for n in names}
    return [d.name for d in space.searched if d.name not in managed]


def parse_groups(text: str) -> dict[str, tuple[str, ...]] | None:
    """The entries' `groups` option: '' for the catalogue's (`GROUP_HPARAMS`), or
    'optimization=learning_rate,momentum;architecture=num_layers' for a table or space
    whose names are not the catalogue's (a group left out has no agent)."""
    if not text.strip():
        return None
    groups: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        group, sep, names = part.partition("=")
        group = group.strip()
        listed = tuple(n.strip() for n in names.split(",") if n.strip())
        if not sep or not listed:
            raise ValueError(f"groups: {part.strip()!r} is not group=name,name (e.g. "
                             "'optimization=lr,momentum;architecture=num_layers')")
        if group in groups:
            raise ValueError(f"groups: {group} given twice; list all its names once")
        groups[group] = listed
    return check_groups(groups)


def check_groups(groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """A user's group -> names mapping, its groups among HYPERA's five."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"groups: {', '.join(map(str, unknown))} is not a HYPERA group; "
                         f"use {', '.join(GROUPS)}")
    return {g: tuple(names) for g, names in groups.items()}


# Positions and deltas.


def position(dim: Dim, value: Any) -> float:
    """`value`'s normalised position in `dim` (log scale for a log range)."""
    if dim.kind == "choice":
        if len(dim.choices) == 1:
            return 0.0
        index = next((i for i, c in enumerate(dim.choices) if c == value), None)
        if index is None:  # a numeric value between choices: the nearest one
            index = int(np.argmin([abs(float(c) - float(value)) for c in dim.choices]))
        return index / (len(dim.choices) - 1)
    low, high, x = float(dim.low), float(dim.high), float(value)
    if dim.kind == "loguniform":
        low, high, x = math.log(low), math.log(high), math.log(max(x, dim.low))
    return float(np.clip((x - low) / (high - low), 0.0, 1.0))


def value_at(dim: Dim, u: float) -> Any:
    """The value of `dim` at position `u` (clipped to [0, 1])."""
    u = float(np.clip(u, 0.0, 1.0))
    if dim.kind == "choice":
        return dim.choices[int(round(u * (len(dim.choices) - 1)))]
    low, high = float(dim.low), float(dim.high)
    if u in (0.0, 1.0):
        return int(low if u == 0 else high) if dim.kind == "int" else (low if u == 0 else high)
    if dim.kind == "loguniform":
        return float(min(high, max(low, math.exp(math.log(low) + u * math.log(high / low)))))
    x = low + u * (high - low)
    if dim.kind == "int":
        return int(min(high, max(low, round(x))))
    return float(min(high, max(low, x)))


def moved(u: float, action: float, scale: float) -> float:
    """A position after a delta: u + scale * a, a clipped to [-1, 1], u to [0, 1]."""
    return float(np.clip(u + scale * float(np.clip(action, -1.0, 1.0)), 0.0, 1.0))


def config_at(space: SearchSpace, positions: Mapping[str, float]) -> dict[str, Any]:
    """The searched dimensions' values at `positions`."""
    return {d.name: value_at(d, positions[d.name]) for d in space.searched
            if d.name in positions}


def positions_of(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, float]:
    """The positions of a config's values of the searched dimensions."""
    return {d.name: position(d, config[d.name]) for d in space.searched if d.name in config}


# The coordinator.


@dataclass
class Proposal:
    """One agent's move: an action per dimension of its group, and its critics' values
    (the twin Q estimates) of that action in the state it saw."""

    agent: str
    deltas: dict[str, float]  # dimension -> action coordinate in [-1, 1]
    q: tuple[float, float] = (0.0, 0.0)

    @property
    def value(self) -> float:
        """The agent's value of its action: the smaller twin estimate, as SAC's target
        uses."""
        return float(min(self.q))

    @property
    def spread(self) -> float:
        """Disagreement of the twin critics: the scale of Thompson sampling's draw."""
        return float(abs(self.q[0] - self.q[1]))


CONFLICT_RULES: tuple[str, ...] = ("value", "specialisation", "thompson")
STRATEGIES: tuple[str, ...] = ("independent", "sequential", "cooperative")


def specialisation_weight(agent: str, name: str) -> float:
    """An agent's weight on a dimension: the specialist's (PRIMARY) or another's."""
    return SPECIALIST_WEIGHT if PRIMARY.get(name, agent) == agent else OTHER_WEIGHT


def resolve(name: str, proposals: Sequence[Proposal], rule: str,
            rng: np.random.Generator) -> tuple[float, str]:
    """The one action on dimension `name` when several agents propose one, and who won
    ('mix' for a weighted mean):

    - value: the proposal with the highest critic value;
    - specialisation: the mean of the actions weighted by each agent's specialisation;
    - thompson: each agent's value drawn from N(value, spread^2) (spread: its twin
      critics' disagreement, at least 1e-3), the highest draw wins.
    """
    moves = [p for p in proposals if name in p.deltas]
    if not moves:
        raise ValueError(f"no proposal moves {name!r}")
    if len(moves) == 1:
        return moves[0].deltas[name], moves[0].agent
    if rule == "value":
        best = max(moves, key=lambda p: p.value)
        return best.deltas[name], best.agent
    if rule == "specialisation":
        weights = np.array([specialisation_weight(p.agent, name) for p in moves])
        actions = np.array([p.deltas[name] for p in moves])
        return float(weights @ actions / weights.sum()), "mix"
    if rule == "thompson":
        draws = [rng.normal(p.value, max(p.spread, 1e-3)) for p in moves]
        best = moves[int(np.argmax(draws))]
        return best.deltas[name], best.agent
    raise ValueError(f"conflict rule must be one of {CONFLICT_RULES}, got {rule!r}")


def merge(positions: Mapping[str, float], proposals: Sequence[Proposal],
          scales: Mapping[str, float], rule: str, rng: np.random.Generator
          ) -> tuple[dict[str, float], dict[str, str]]:
    """Independent optimisation: the union of the proposals applied to `positions`, each
    dimension moved by its agent's scale; a dimension two agents move is resolved by `rule`
    (with a mixed action, at the specialist's scale). Returns the new positions and, per
    moved dimension, the agent whose move counts ('mix' for a weighted mean)."""
    out = dict(positions)
    winners: dict[str, str] = {}
    names = list(dict.fromkeys(n for p in proposals for n in p.deltas))
    for name in names:
        action, winner = resolve(name, proposals, rule, rng)
        movers = [p.agent for p in proposals if name in p.deltas]
        scale_of = winner if winner != "mix" else max(
            movers, key=lambda a: specialisation_weight(a, name))
        out[name] = moved(out[name], action, scales[scale_of])
        winners[name] = winner
    return out, winners


def apply_in_sequence(positions: Mapping[str, float], proposals: Sequence[Proposal],
                      scales: Mapping[str, float]) -> dict[str, float]:
    """Sequential optimisation, A_n(...A_1(theta)): each proposal moves the positions the
    previous ones left (a dimension two agents manage moves twice, no conflict)."""
    out = dict(positions)
    for p in proposals:
        for name, action in p.deltas.items():
            out[name] = moved(out[name], action, scales[p.agent])
    return out


def best_combination(scores: np.ndarray, weights: Sequence[float]) -> int:
    """Cooperative optimisation: the candidate combination c maximising sum_i w_i V_i(c),
    from `scores[c, i]` (agent i's critic value of combination c)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(weights):
        raise ValueError(f"scores must be (combinations, {len(weights)}), got {scores.shape}")
    return int(np.argmax(scores @ np.asarray(weights, dtype=np.float64)))


# Settings.


@dataclass(frozen=True)
class HyperaSettings:
    """The coordinator's and the agents' settings (HYPERA's by default)."""

    strategy: str = "independent"
    conflict: str = "value"
    agents: dict[str, AgentConfig] = field(default_factory=lambda: dict(DEFAULT_AGENTS))
    candidates: int = 8  # cooperative: candidate combinations scored by the critics
    random_starts: int = 5  # the document starts from one point; 5 won on the replay tables
    reward_scale: float = 100.0
    # SAC, HYPERA: lr 3e-4, gamma 0.99, replay 1e6, tau 0.005, batch 256.
    lr: float = 3e-4
    gamma: float = 0.99
    replay_capacity: int = 100_000
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 16
    updates_per_step: int = 1
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.conflict not in CONFLICT_RULES:
            raise ValueError(f"conflict must be one of {CONFLICT_RULES}, got "
                             f"{self.conflict!r}")


def parse_agent_list(text: str, name: str, kind: type) -> tuple[Any, ...]:
    """Five comma-separated values, one per group in HYPERA's order."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != len(GROUPS):
        raise ValueError(f"option {name!r}: give {len(GROUPS)} values joined by commas, one "
                         f"per agent ({', '.join(GROUPS)}), got {text!r}")
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise ValueError(f"option {name!r}: {text!r} has a value that is not a "
                         f"{kind.__name__}") from None
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"option {name!r}: every value must be a finite number above 0, "
                         f"got {text!r}")
    return values


def agent_configs(scales: str, temperatures: str, every: str) -> dict[str, AgentConfig]:
    """Per-agent settings from the entry's three comma lists."""
    s = parse_agent_list(scales, "scales", float)
    t = parse_agent_list(temperatures, "temperatures", float)
    e = parse_agent_list(every, "every", int)
    return {g: AgentConfig(s[i], t[i], e[i]) for i, g in enumerate(GROUPS)}


def _comma(values: list[Any]) -> str:
    return ",".join(f"{v:g}" for v in values)


DEFAULT_SCALES = _comma([DEFAULT_AGENTS[g].scale for g in GROUPS])
DOCUMENT_SCALES = _comma([DOCUMENT_AGENTS[g].scale for g in GROUPS])
DEFAULT_TEMPERATURES = _comma([DEFAULT_AGENTS[g].temperature for g in GROUPS])
DEFAULT_EVERY = _comma([DEFAULT_AGENTS[g].every for g in GROUPS])
