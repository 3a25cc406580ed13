"""Training: datasets, duplicate-aware splits, metrics and the training loop."""
