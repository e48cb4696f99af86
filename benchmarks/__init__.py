"""Benchmarks against MediaPipe itself and of our models, input pipeline and training (each a command)."""
