"""EMERALD-O's RL agents (RLlib) and their Tune adapters."""
