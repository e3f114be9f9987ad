"""An in-memory store for unit tests: the SQLite store on a private in-memory database."""

from onshore.store.sqlite import SqliteStore


def memory_store() -> SqliteStore:
    return SqliteStore(":memory:")
