"""Tabular Q-learning without RLlib: Vashishtha 2025's adaptive-exploration walk over the
grid (`AdaptiveQSearch`, entry `adaptive-q`) and Iranfar et al.'s per-layer agents
(`LayerwiseSearch`, entry `layerwise`)."""
