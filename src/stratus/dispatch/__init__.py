"""Dispatcher and activator: per-revision queues, the replica picker, scale-from-zero holds."""
