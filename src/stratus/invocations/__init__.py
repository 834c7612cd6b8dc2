"""Asynchronous invocations on the dispatcher: the worker that drains the queue, retries and
dead letters, idempotent sync calls, progress and destinations."""
