"""The ``stratus`` command line."""
