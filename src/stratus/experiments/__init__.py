"""Experiments: A/B variants over a traffic split, their per-variant statistics and significance."""
