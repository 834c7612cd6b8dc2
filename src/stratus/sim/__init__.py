"""The autoscaling simulator: replays a trace through the live policies, offline, and reports cost."""
