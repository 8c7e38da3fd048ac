"""Torch-free runtime: load an exported artifact and run it (see `load`)."""
