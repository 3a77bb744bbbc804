"""The tabular walk's own defaults (Vashishtha 2025 gives no values); its exploration
schedule is shared (rllib_policies.exploration)."""

from __future__ import annotations

from rllib_policies.exploration import EPS_MAX, EPS_MIN, K0, LAMBDA, adaptive_epsilon, decay_step

ALPHA, GAMMA = 0.5, 0.9
"""Learning rate 0.5 and discount 0.9 for a short walk (Vashishtha 2025 gives none)."""

MAX_KNOWN_STEPS = 100
"""Steps onto already evaluated configurations learned from (at no cost) before a trial is
spent on a known one anyway."""

__all__ = ["ALPHA", "EPS_MAX", "EPS_MIN", "GAMMA", "K0", "LAMBDA", "MAX_KNOWN_STEPS",
           "adaptive_epsilon", "decay_step"]
