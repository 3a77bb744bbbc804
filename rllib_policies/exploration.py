"""What several RL methods share besides the agents: Vashishtha 2025's adaptive exploration
schedule (the tabular walk's, and EMERALD-O's `epsilon: adaptive`) and EMERALD-O's failure
penalties (HYPERA's agents take them too). No Ray or torch: cheap to import for the registry.
"""

from __future__ import annotations

import math

import numpy as np

EPS_MAX, EPS_MIN = 1.0, 0.05
K0, LAMBDA = 0.1, -1.0
"""Defaults (Vashishtha 2025 gives no values): exploration from 1.0 down to 0.05, k0 0.1 per
decision (epsilon near its minimum after about 30 decisions at zero variance), lambda -1 (the
prose's reading)."""

FAILURE_REWARD = -1.0
"""Reward of a failed, diverged or pruned step (Iranfar et al.: -1 on early termination;
EMERALD-O's penalty)."""
EARLY_STOP_PENALTY = 0.5
"""What a step whose trial was stopped early loses (EMERALD-O 5.1.2; the paper gives no
number: ours)."""


def adaptive_epsilon(cumulative_k: float, eps_max: float = EPS_MAX,
                     eps_min: float = EPS_MIN) -> float:
    """eps_min + (eps_max - eps_min) exp(-K) for the cumulative decay K (Vashishtha 2025)."""
    return eps_min + (eps_max - eps_min) * math.exp(-max(0.0, cumulative_k))


def decay_step(q_values: np.ndarray, k0: float = K0, lam: float = LAMBDA) -> float:
    """One decision's k = max(0, k0 + lambda Var(Q(s, .))): never negative, so epsilon
    never rises again."""
    return max(0.0, k0 + lam * float(np.var(q_values)))
