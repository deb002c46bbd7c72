"""Measurement helpers: latency, FLOPs, parameter counts, the host they ran on."""
