"""What the SQLite store's table mixins share: one write transaction, and reads, under the store's lock."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any


class Tables:
    """Mixed into SqliteStore: it provides the connection, its lock and the error guard."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it, or none."""
        with self._lock, self._guard():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock, self._guard():
            return self._conn.execute(sql, args).fetchall()
