"""Datasets: immutable, content-addressed versions of tabular data, their schemas and splits."""
