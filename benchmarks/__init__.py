"""Benchmarks: placement latency against a plain reference (``python benchmarks/placement_latency.py``)."""
