"""The core: types, the search space, the registry, the storage layout, the configuration
and its presets. Imports neither torch nor Ray (a bad config fails before either loads)."""
