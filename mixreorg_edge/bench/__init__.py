"""Measurement helpers: latency, FLOPs, parameter counts."""
