"""Experiment tracking outside Stratus: mirroring runs to an MLflow server."""
