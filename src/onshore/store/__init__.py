"""Persistence: narrow store protocols and their SQLite and in-memory implementations."""
