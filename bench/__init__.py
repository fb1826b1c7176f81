"""Benchmarks run by `crossbook bench <name>`."""
