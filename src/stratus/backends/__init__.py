"""Backends decide where replicas run: ``local`` processes on this host."""
