"""Replica runtime: zygotes, replica processes and the wire protocol between them."""
