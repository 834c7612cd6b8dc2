"""Stores: metadata (SQLAlchemy) and content-addressed artifacts."""
