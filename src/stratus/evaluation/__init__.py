"""Evaluation: the metrics a model version is judged by and the gate expressions over them."""
