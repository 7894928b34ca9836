"""Benchmarks for scenario-gan (run as ``python -m benchmarks.<name>``)."""
