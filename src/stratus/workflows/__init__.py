"""Workflows: multi-step pipelines of deployments, defined in YAML or JSON, executed durably."""
