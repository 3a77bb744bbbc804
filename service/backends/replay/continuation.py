"""Where a trial stands on a recorded curve after its hyperparameters change inside it (a
controller's switch, a PBT / PB2 clone): the continuation models a replay chooses from.

No weights carry over in a table, so a switch from configuration A to B must be modelled.
`reach` (the default) continues B's curve from the first epoch where it reaches the value the
trial had reached: a network at 40% that switches to a good rate is not credited with that
rate's 12-epoch value one epoch later. `epoch` continues B's curve from the trial's current
epoch (the replay's old model: a late switch to a good configuration earns its full-length
value); `restart` starts B's curve again at epoch 1. Each model's error against real
retraining is measured by `service.backends.replay.switches.model_errors`.

The same functions move a trial through the simulation and score a schedule afterwards
(`splice`), so a row and its score agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MODELS = ("reach", "epoch", "restart")
DEFAULT_MODEL = "reach"


def position_after_switch(model: str, curve: np.ndarray, length: int, epoch: int,
                          value: float, sign: float) -> int:
    """Epochs of the new configuration's curve (this seed) the trial counts as done after
    a switch at trial epoch `epoch` with metric `value`: the next epoch reads index
    `position` (0-based) of `curve`. `length` is how many epochs the curve recorded."""
    if model == "epoch":
        return epoch
    if model == "restart" or epoch == 0 or not math.isfinite(value):
        return 0
    if model != "reach":
        raise ValueError(f"unknown continuation model {model!r}; use one of {MODELS}")
    recorded = curve[:length]
    finite = np.isfinite(recorded)
    if not finite.any():
        return 0
    reached = np.flatnonzero(finite & (sign * recorded >= sign * value))
    if reached.size:
        return int(reached[0]) + 1
    # the new curve never gets as far: the trial stands at its best epoch
    return int(np.nanargmax(np.where(finite, sign * recorded, -np.inf))) + 1


def read(curve: np.ndarray, length: int, epochs: int, position: int) -> float:
    """The value at 0-based `position`: past the end of a curve that ended early (it
    diverged) is NaN; past the recorded epochs of a full curve, its last value (a plateau)."""
    if position < length:
        return float(curve[position])
    if length < epochs:
        return math.nan
    return float(curve[length - 1])


def splice(metric: np.ndarray, lengths: np.ndarray, seed: int, configs: Sequence[int],
           model: str, sign: float) -> np.ndarray:
    """The curve a schedule gets on one recorded seed: `configs` holds the configuration in
    force each epoch; `metric` is the table's (configuration, seed, epoch) array. Stops (NaN
    after) at the first non-finite value, as a diverged trial does."""
    epochs = metric.shape[2]
    out = np.full(len(configs), math.nan)
    position, current = 0, None
    for i, config in enumerate(configs):
        if current is not None and config != current:
            position = position_after_switch(model, metric[config, seed],
                                             int(lengths[config, seed]), i, out[i - 1], sign)
        current = config
        out[i] = read(metric[config, seed], int(lengths[config, seed]), epochs, position)
        position += 1
        if not math.isfinite(out[i]):
            break
    return out
