"""Ray Tune hyperparameter-tuning service package."""
