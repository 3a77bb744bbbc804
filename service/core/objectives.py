"""An experiment's objectives as the backends use them: which row columns they are, how a
row is scalarised into the `objective` column every single-objective searcher and
scheduler optimises, and what a searcher is told to optimise (`search_target`).

`with_objective` is the one place the scalarised column is made: the Tune trainable and
the replay simulator both call it on each epoch row. The arithmetic is `service.core.pareto`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.pareto import PAREGO_RHO, augmented_chebyshev, normalise, parego_weights

OBJECTIVE_COLUMN = "objective"
"""The scalarised value of a row's objectives (larger is better): what a single-objective
searcher or scheduler optimises when the experiment has `objectives`."""

OBJECTIVE_METRICS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "val_acc": ("max", (0.0, 1.0)),
    "train_acc": ("max", (0.0, 1.0)),
    "val_loss": ("min", None),
    "train_loss": ("min", None),
    "model_size_mb": ("min", None),
    "num_parameters": ("min", None),
    "epoch_time_s": ("min", None),
    "train_ms_per_batch": ("min", None),
    "images_per_s": ("max", None),
}
"""Row columns (`service.core.api.EPOCH_FIELDS`) an objective may name: its usual mode and
its natural range, where it has one (accuracies), for normalising."""

FINAL_ONLY: dict[str, str] = {
    "infer_ms_per_batch": "train_ms_per_batch or epoch_time_s",
    "test_acc": "val_acc",
    "test_loss": "val_loss",
}
"""Numbers only the final test measures (no trial row reports them), and what to use."""


@dataclass(frozen=True)
class Objectives:
    """The objectives of an experiment, resolved: metric columns, modes, the normalising
    bounds per objective (None where none is known: then rows get no `objective`), the
    scalarisation (`parego`: a lattice weight vector per trial; `weights`: fixed ones) and
    the hypervolume reference point (None: the report takes one from the data)."""

    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    bounds: tuple[tuple[float, float] | None, ...]
    kind: str = "parego"
    weights: tuple[float, ...] | None = None
    reference: tuple[float, ...] | None = None

    @property
    def scalarisable(self) -> bool:
        """Whether rows can be scalarised: every objective has normalising bounds."""
        return all(b is not None for b in self.bounds)

    def trial_weights(self, seed: int, trial_id: str) -> np.ndarray:
        """The weights a trial's rows are scalarised with: fixed, or ParEGO's lattice
        vector drawn for (cell seed, trial number)."""
        if self.kind == "weights" and self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            return w / w.sum()
        return parego_weights(len(self.metrics), seed, trial_key(trial_id))

    def scalarise(self, row: Mapping[str, Any], seed: int, trial_id: str) -> float:
        """The row's objectives as one value, larger better: minus ParEGO's augmented
        Chebyshev function of the normalised costs; NaN where a value is missing or not
        finite."""
        try:
            values = [float(row[m]) for m in self.metrics]
        except (KeyError, TypeError, ValueError):
            return math.nan
        if not all(math.isfinite(v) for v in values) or not self.scalarisable:
            return math.nan
        costs = normalise([values], self.modes, self.bounds)[0]
        return -float(augmented_chebyshev(costs, self.trial_weights(seed, trial_id),
                                          PAREGO_RHO))

    def as_dict(self) -> dict[str, Any]:
        """Plain values, to travel in a trial's run settings."""
        return {"metrics": list(self.metrics), "modes": list(self.modes),
                "bounds": [list(b) if b is not None else None for b in self.bounds],
                "kind": self.kind,
                "weights": list(self.weights) if self.weights is not None else None,
                "reference": list(self.reference) if self.reference is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objectives:
        return cls(tuple(data["metrics"]), tuple(data["modes"]),
                   tuple(tuple(b) if b is not None else None for b in data["bounds"]),
                   data.get("kind", "parego"),
                   tuple(data["weights"]) if data.get("weights") is not None else None,
                   tuple(data["reference"]) if data.get("reference") is not None else None)


def trial_key(trial_id: str) -> int:
    """A trial's number for its ParEGO weights: the counter Tune ends its trial ids with
    (`abc12_00003` is 3; a replay numbers them the same way), else a stable hash."""
    found = re.search(r"(\d+)$", str(trial_id))
    return int(found.group(1)) if found else zlib.crc32(str(trial_id).encode())


def normalising_bounds(metric: str, mode: str, given: Sequence[float] | None,
                       reference: float | None) -> tuple[float, float] | None:
    """Where an objective is normalised from and to: its given bounds, its natural range
    (accuracies), or for a minimised non-negative quantity 0 to the reference point's
    value; None when none of these is known."""
    if given is not None:
        return float(given[0]), float(given[1])
    natural = OBJECTIVE_METRICS.get(metric, ("", None))[1]
    if natural is not None:
        return natural
    if mode == "min" and reference is not None and reference > 0:
        return 0.0, float(reference)
    return None


def with_objective(row: dict[str, Any], objectives: Objectives | None, seed: int,
                   trial_id: str) -> dict[str, Any]:
    """The row with its `objective` column (in place, returned), where the experiment has
    scalarisable objectives; otherwise the row unchanged. Both backends call it."""
    if objectives is not None and objectives.scalarisable:
        row[OBJECTIVE_COLUMN] = objectives.scalarise(row, seed, trial_id)
    return row


def search_target(objectives: Objectives | None, native: bool, metric: str, mode: str
                  ) -> tuple[str | list[str], str | list[str]]:
    """The metric and mode a searcher is built with: the experiment's own without
    objectives; the objectives' lists for a native multi-objective searcher; else the
    scalarised `objective`, maximised."""
    if objectives is None:
        return metric, mode
    if native:
        return list(objectives.metrics), list(objectives.modes)
    return OBJECTIVE_COLUMN, "max"
