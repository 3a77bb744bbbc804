"""HYPERA: five SAC agents, one per hyperparameter group, and a coordinator, inside running
trials (`HyperaController`, entry `hypera`) or as a searcher (`HyperaSearch`,
`hypera-search`); the pure group, delta and coordination rules in `_core`."""
