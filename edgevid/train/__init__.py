"""Training and torch-side evaluation."""
