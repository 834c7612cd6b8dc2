"""Durable storage of asynchronous invocations: one interface, SQL (SQLite, PostgreSQL) and
Redis backends, and the pure retry policy they are driven by."""
