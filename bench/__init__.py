"""Benchmarks (accuracy, speed); not part of the installed package."""
