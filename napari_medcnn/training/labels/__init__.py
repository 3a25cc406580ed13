"""training/labels."""
