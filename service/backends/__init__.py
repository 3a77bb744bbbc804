"""Backends: how a cell's trials run. `tune` trains for real as Ray Tune trials; `replay`
runs the same plans against recorded learning curves on a simulated clock."""
