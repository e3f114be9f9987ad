"""The SQLite tables of Volumes: each volume's committed tree, and the number of its last commit."""

from __future__ import annotations

import sqlite3
from typing import Any

from onshore.models import VolumeEntry
from onshore.store.sqlite_base import Tables

_COLUMNS = "path, kind, mode, size, mtime, object"
_PUT = f"INSERT OR REPLACE INTO volume_entries (volume_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
# A directory's subtree, as a range of paths: "d/" <= path < "d0" ("0" sorts just after "/").
_SUBTREE = "(path = ? OR (path >= ? AND path < ?))"


def _subtree_args(path: str) -> tuple[str, str, str]:
    return path, path + "/", path + "0"


def _entry(row: Any) -> VolumeEntry:
    return VolumeEntry(row[0], row[1], row[2], row[3], row[4], row[5])


class VolumeTables(Tables):
    """Mixed into SqliteStore, which provides the connection, its lock and the error guard."""

    def volume_tree(self, volume_id: str, under: str = "") -> list[VolumeEntry]:
        """The entries at and below a path ("": the whole tree), in path order."""
        args: tuple[str, ...]
        if not under:
            sql, args = f"SELECT {_COLUMNS} FROM volume_entries WHERE volume_id = ?", (volume_id,)
        else:
            sql = f"SELECT {_COLUMNS} FROM volume_entries WHERE volume_id = ? AND {_SUBTREE}"
            args = (volume_id, *_subtree_args(under))
        return [_entry(r) for r in self._rows(sql + " ORDER BY path", args)]

    def volume_entry(self, volume_id: str, path: str) -> VolumeEntry | None:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM volume_entries WHERE volume_id = ? AND path = ?", (volume_id, path)
        )
        return _entry(rows[0]) if rows else None

    def volume_version(self, volume_id: str) -> int:
        rows = self._rows("SELECT version FROM volume_commits WHERE volume_id = ?", (volume_id,))
        return int(rows[0][0]) if rows else 0

    def volume_commit_tree(self, volume_id: str) -> tuple[int, list[VolumeEntry]]:
        """The number of the volume's last commit and its tree, read together (no commit in between)."""
        with self._lock, self._guard():
            rows = self._conn.execute(
                "SELECT version FROM volume_commits WHERE volume_id = ?", (volume_id,)
            ).fetchall()
            entries = self._conn.execute(
                f"SELECT {_COLUMNS} FROM volume_entries WHERE volume_id = ? ORDER BY path", (volume_id,)
            ).fetchall()
        return (int(rows[0][0]) if rows else 0), [_entry(r) for r in entries]

    def volume_apply(self, volume_id: str, changes: list[tuple[str, VolumeEntry]]) -> int:
        """Apply changes in order, in one transaction: ("delete", e) removes e.path and everything below it
        ("" : everything), ("put", e) writes e. Returns the volume's new commit number."""
        with self._transaction() as conn:
            for op, entry in changes:
                if op == "delete":
                    _delete(conn, volume_id, entry.path)
                else:
                    e = entry
                    conn.execute(_PUT, (volume_id, e.path, e.kind, e.mode, e.size, e.mtime, e.object))
            conn.execute(
                "INSERT INTO volume_commits (volume_id, version) VALUES (?, 1) "
                "ON CONFLICT (volume_id) DO UPDATE SET version = version + 1",
                (volume_id,),
            )
            (version,) = conn.execute(
                "SELECT version FROM volume_commits WHERE volume_id = ?", (volume_id,)
            ).fetchone()
            return int(version)

    def volume_objects(self) -> set[str]:
        """Every content hash that some volume's tree names."""
        rows = self._rows("SELECT DISTINCT object FROM volume_entries WHERE kind = 'file'")
        return {r[0] for r in rows}


def _delete(conn: sqlite3.Connection, volume_id: str, path: str) -> None:
    if not path:
        conn.execute("DELETE FROM volume_entries WHERE volume_id = ?", (volume_id,))
    else:
        conn.execute(
            f"DELETE FROM volume_entries WHERE volume_id = ? AND {_SUBTREE}",
            (volume_id, *_subtree_args(path)),
        )
