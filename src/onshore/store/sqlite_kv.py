"""The SQLite tables of Dicts and Queues: their identities, dict entries, queue items and partitions."""

from __future__ import annotations

from onshore.models import KvObject
from onshore.store.codec import decode, encode
from onshore.store.sqlite_base import Tables


class KvTables(Tables):
    """Mixed into SqliteStore, which provides the connection, its lock and the error guard."""

    # -- identities
    def put_kv_object(self, obj: KvObject) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO kv_objects (object_id, kind, name, environment, data) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (object_id) DO UPDATE SET name = excluded.name, data = excluded.data",
                (obj.object_id, obj.kind, obj.name, obj.environment, encode(obj)),
            )

    def get_kv_object(self, object_id: str) -> KvObject | None:
        rows = self._rows("SELECT data FROM kv_objects WHERE object_id = ?", (object_id,))
        return decode(KvObject, rows[0][0]) if rows else None

    def find_kv_object(self, kind: str, name: str, environment: str) -> KvObject | None:
        rows = self._rows(
            "SELECT data FROM kv_objects WHERE kind = ? AND environment = ? AND name = ?",
            (kind, environment, name),
        )
        return decode(KvObject, rows[0][0]) if rows else None

    def list_kv_objects(self, kind: str) -> list[KvObject]:
        rows = self._rows("SELECT data FROM kv_objects WHERE kind = ? ORDER BY rowid", (kind,))
        return [decode(KvObject, r[0]) for r in rows]

    def delete_kv_object(self, object_id: str) -> None:
        """The object and everything in it, in one transaction."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM kv_objects WHERE object_id = ?", (object_id,))
            conn.execute("DELETE FROM dict_entries WHERE dict_id = ?", (object_id,))
            conn.execute("DELETE FROM queue_items WHERE queue_id = ?", (object_id,))
            conn.execute("DELETE FROM queue_partitions WHERE queue_id = ?", (object_id,))
            conn.execute("DELETE FROM volume_entries WHERE volume_id = ?", (object_id,))
            conn.execute("DELETE FROM volume_commits WHERE volume_id = ?", (object_id,))

    # -- dict entries
    def dict_get(self, dict_id: str, key: bytes) -> bytes | None:
        rows = self._rows("SELECT value FROM dict_entries WHERE dict_id = ? AND key = ?", (dict_id, key))
        return bytes(rows[0][0]) if rows else None

    def dict_update(self, dict_id: str, entries: list[tuple[bytes, bytes]], if_not_exists: bool) -> bool:
        """Write the entries (all or none); with if_not_exists, only where no key of them exists yet.
        Whether they were written."""
        with self._transaction() as conn:
            if if_not_exists:
                for key, _ in entries:
                    found = conn.execute(
                        "SELECT 1 FROM dict_entries WHERE dict_id = ? AND key = ?", (dict_id, key)
                    ).fetchone()
                    if found:
                        return False
            conn.executemany(
                "INSERT INTO dict_entries (dict_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (dict_id, key) DO UPDATE SET value = excluded.value",
                [(dict_id, k, v) for k, v in entries],
            )
        return True

    def dict_pop(self, dict_id: str, key: bytes) -> bytes | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT value FROM dict_entries WHERE dict_id = ? AND key = ?", (dict_id, key)
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM dict_entries WHERE dict_id = ? AND key = ?", (dict_id, key))
        return bytes(row[0])

    def dict_len(self, dict_id: str) -> int:
        return int(self._rows("SELECT COUNT(*) FROM dict_entries WHERE dict_id = ?", (dict_id,))[0][0])

    def dict_clear(self, dict_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM dict_entries WHERE dict_id = ?", (dict_id,))

    def dict_items(self, dict_id: str) -> list[tuple[bytes, bytes]]:
        rows = self._rows("SELECT key, value FROM dict_entries WHERE dict_id = ? ORDER BY rowid", (dict_id,))
        return [(bytes(k), bytes(v)) for k, v in rows]

    # -- queue items
    def queue_push(
        self, queue_id: str, partition: bytes, values: list[bytes], ttl_seconds: int, now: float, limit: int
    ) -> bool:
        """Append the values to the partition (all or none); False if that would pass `limit` items."""
        with self._transaction() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM queue_items WHERE queue_id = ? AND partition_key = ?",
                (queue_id, partition),
            ).fetchone()
            if count + len(values) > limit:
                return False
            row = conn.execute(
                "SELECT next_entry_id FROM queue_partitions WHERE queue_id = ? AND partition_key = ?",
                (queue_id, partition),
            ).fetchone()
            first = int(row[0]) if row else 1
            conn.executemany(
                "INSERT INTO queue_items (queue_id, partition_key, entry_id, value) VALUES (?, ?, ?, ?)",
                [(queue_id, partition, first + i, v) for i, v in enumerate(values)],
            )
            conn.execute(
                "INSERT INTO queue_partitions "
                "(queue_id, partition_key, ttl_seconds, last_activity, next_entry_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (queue_id, partition_key) DO UPDATE SET "
                "ttl_seconds = excluded.ttl_seconds, last_activity = excluded.last_activity, "
                "next_entry_id = excluded.next_entry_id",
                (queue_id, partition, ttl_seconds, now, first + len(values)),
            )
        return True

    def queue_pop(self, queue_id: str, partition: bytes, count: int, now: float) -> list[bytes]:
        """Remove and return up to `count` of the partition's oldest items."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT entry_id, value FROM queue_items WHERE queue_id = ? AND partition_key = ? "
                "ORDER BY entry_id LIMIT ?",
                (queue_id, partition, count),
            ).fetchall()
            if rows:
                conn.execute(
                    "DELETE FROM queue_items WHERE queue_id = ? AND partition_key = ? AND entry_id <= ?",
                    (queue_id, partition, rows[-1][0]),
                )
                conn.execute(
                    "UPDATE queue_partitions SET last_activity = ? WHERE queue_id = ? AND partition_key = ?",
                    (now, queue_id, partition),
                )
        return [bytes(r[1]) for r in rows]

    def queue_len(self, queue_id: str, partition: bytes | None) -> int:
        """Items in one partition, or in all of them (None)."""
        if partition is None:
            rows = self._rows("SELECT COUNT(*) FROM queue_items WHERE queue_id = ?", (queue_id,))
        else:
            rows = self._rows(
                "SELECT COUNT(*) FROM queue_items WHERE queue_id = ? AND partition_key = ?",
                (queue_id, partition),
            )
        return int(rows[0][0])

    def queue_partitions(self, queue_id: str) -> int:
        rows = self._rows(
            "SELECT COUNT(DISTINCT partition_key) FROM queue_items WHERE queue_id = ?", (queue_id,)
        )
        return int(rows[0][0])

    def queue_clear(self, queue_id: str, partition: bytes | None) -> None:
        with self._transaction() as conn:
            if partition is None:
                conn.execute("DELETE FROM queue_items WHERE queue_id = ?", (queue_id,))
            else:
                conn.execute(
                    "DELETE FROM queue_items WHERE queue_id = ? AND partition_key = ?", (queue_id, partition)
                )

    def queue_after(self, queue_id: str, partition: bytes, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(entry id, value) of the partition's items after entry id `after`, oldest first (not taken)."""
        rows = self._rows(
            "SELECT entry_id, value FROM queue_items "
            "WHERE queue_id = ? AND partition_key = ? AND entry_id > ? ORDER BY entry_id LIMIT ?",
            (queue_id, partition, after, limit),
        )
        return [(int(e), bytes(v)) for e, v in rows]

    def queue_expire(self, now: float) -> int:
        """Drop the partitions (and their items) idle past their TTL; how many."""
        with self._transaction() as conn:
            expired = conn.execute(
                "SELECT queue_id, partition_key FROM queue_partitions WHERE last_activity + ttl_seconds < ?",
                (now,),
            ).fetchall()
            for queue_id, partition in expired:
                conn.execute(
                    "DELETE FROM queue_items WHERE queue_id = ? AND partition_key = ?", (queue_id, partition)
                )
                conn.execute(
                    "DELETE FROM queue_partitions WHERE queue_id = ? AND partition_key = ?",
                    (queue_id, partition),
                )
        return len(expired)
