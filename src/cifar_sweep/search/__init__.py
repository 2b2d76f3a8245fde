"""Hyperparameter search: the Optuna study, its many workers, its table."""
