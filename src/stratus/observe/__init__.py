"""Observability: metrics now; tracing, logs and usage records as they land."""
