"""Test doubles for libraries that cannot run here (TensorRT and CUDA need an NVIDIA GPU)."""
