"""Triggers that start asynchronous invocations: cron schedules, topics (CloudEvents) and
external queue sources (Redis Streams)."""
