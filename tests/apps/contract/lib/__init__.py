"""The bundle's own package: its modules show in tracebacks by their path in the bundle."""
