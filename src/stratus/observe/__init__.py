"""Observability: metrics, logs, usage and cost, alerts and the dashboard's series."""
