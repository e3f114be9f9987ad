"""The SQLite store: WAL mode, numbered migrations, one JSON row per record."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from onshore.errors import Unavailable
from onshore.models import (
    App,
    CallRecord,
    ClassRecord,
    DeploymentRecord,
    FunctionRecord,
    ImageRecord,
    Mount,
    OutputRecord,
    ScheduleRecord,
    Secret,
    StoredInput,
    Token,
)
from onshore.store.codec import decode, encode
from onshore.store.sqlite_kv import KvTables
from onshore.store.sqlite_volumes import VolumeTables

T = TypeVar("T")

# An RPC that writes waits this long for a lock another process holds on the database (the store runs on
# the event loop: a long wait would stall every call), then answers UNAVAILABLE; the client retries those.
BUSY_TIMEOUT_MS = 1000

# What SQLite's messages mean for the person running the server.
_CAUSES = {
    "database is locked": "another process holds a lock on it",
    "database table is locked": "another process holds a lock on it",
    "disk i/o error": "the disk failed a read or write",
    "database or disk is full": "the disk is full",
    "attempt to write a readonly database": "it or its directory is read-only",
    "unable to open database file": "it cannot be opened (missing directory, permissions, read-only disk)",
}


def database_error(path: str, exc: sqlite3.Error) -> Unavailable:
    """A one-line UNAVAILABLE error naming the database file and what went wrong."""
    message = str(exc) or type(exc).__name__
    cause = _CAUSES.get(message.lower(), "")
    return Unavailable(f"The database {path} is unavailable: {message}" + (f" ({cause})" if cause else ""))


def _private_file(path: str) -> None:
    """Create the file owner-only (0600) before SQLite opens it, and make an existing one owner-only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("onshore.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def _upsert_sql(table: str, columns: tuple[str, ...], keys: int) -> str:
    """Insert a row or update it in place (keeping its rowid, so listings keep insertion order)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[keys:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(columns[:keys])}) DO UPDATE SET {updates}"
    )


# OperationalError messages that mean Onshore's own SQL is wrong, not that the database is unusable now.
_BUG_MARKERS = ("no such table", "no such column", "syntax error", "has no column")


class SqliteStore(KvTables, VolumeTables):
    """Implements every store protocol on one SQLite file."""

    def __init__(self, path: Path | str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        """Open (creating it owner-only) the database; Unavailable, naming the file, if that fails."""
        self.path = str(path)
        self._lock = threading.Lock()
        on_disk = self.path != ":memory:"
        try:
            if on_disk:
                _private_file(self.path)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            with self._guard():
                self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                self._conn.execute("PRAGMA journal_mode=WAL")
                # WAL with synchronous=NORMAL: commits are durable across a process crash; a power loss may
                # lose the last few, never corrupt the file.
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
        except OSError as exc:
            raise Unavailable(f"The database {self.path} is unavailable: {exc.strerror or exc}") from None
        if on_disk:
            # SQLite gives the -wal and -shm files the database file's mode; make sure of it.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(self.path + suffix, 0o600)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's operational errors (a lock, a full or failing disk) become one-line Unavailable errors."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if any(marker in str(exc) for marker in _BUG_MARKERS):
                raise  # a statement the schema does not fit: a bug, not the database's state
            raise database_error(self.path, exc) from None
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # an integrity or programming error: a bug
                raise
            raise database_error(self.path, exc) from None  # "file is not a database", "malformed"

    def _migrate(self) -> None:
        (current,) = self._conn.execute("PRAGMA user_version").fetchone()
        for number, sql in _migrations():
            if number <= current:
                continue
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in sql.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version={number}")
                    self._conn.execute("COMMIT")
                except Exception:
                    self._conn.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        with self._guard():
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- helpers
    def _upsert(self, table: str, columns: tuple[str, ...], values: tuple[Any, ...], keys: int) -> None:
        self._exec(_upsert_sql(table, columns, keys), values)

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock, self._guard():
            self._conn.execute(sql, args)

    def _one(self, cls: type[T], sql: str, args: tuple[Any, ...]) -> T | None:
        with self._lock, self._guard():
            row = self._conn.execute(sql, args).fetchone()
        return decode(cls, row[0]) if row else None

    def _many(self, cls: type[T], sql: str, args: tuple[Any, ...] = ()) -> list[T]:
        with self._lock, self._guard():
            rows = self._conn.execute(sql, args).fetchall()
        return [decode(cls, r[0]) for r in rows]

    # -- apps
    def put_app(self, app: App) -> None:
        self._upsert(
            "apps",
            ("app_id", "name", "state", "data"),
            (app.app_id, app.name, app.state.value, encode(app)),
            keys=1,
        )

    def get_app(self, app_id: str) -> App | None:
        return self._one(App, "SELECT data FROM apps WHERE app_id = ?", (app_id,))

    def list_apps(self) -> list[App]:
        return self._many(App, "SELECT data FROM apps ORDER BY rowid")

    def add_deployment(self, record: DeploymentRecord) -> None:
        self._upsert(
            "deployments",
            ("app_id", "version", "data"),
            (record.app_id, record.version, encode(record)),
            keys=2,
        )

    def list_deployments(self, app_id: str) -> list[DeploymentRecord]:
        return self._many(
            DeploymentRecord, "SELECT data FROM deployments WHERE app_id = ? ORDER BY version", (app_id,)
        )

    # -- functions and classes
    def put_function(self, fn: FunctionRecord) -> None:
        self._upsert(
            "functions", ("function_id", "app_id", "data"), (fn.function_id, fn.app_id, encode(fn)), keys=1
        )

    def get_function(self, function_id: str) -> FunctionRecord | None:
        return self._one(FunctionRecord, "SELECT data FROM functions WHERE function_id = ?", (function_id,))

    def list_functions(self, app_id: str) -> list[FunctionRecord]:
        return self._many(
            FunctionRecord, "SELECT data FROM functions WHERE app_id = ? ORDER BY rowid", (app_id,)
        )

    def put_class(self, cls: ClassRecord) -> None:
        self._upsert(
            "classes", ("class_id", "app_id", "data"), (cls.class_id, cls.app_id, encode(cls)), keys=1
        )

    def get_class(self, class_id: str) -> ClassRecord | None:
        return self._one(ClassRecord, "SELECT data FROM classes WHERE class_id = ?", (class_id,))

    # -- secrets
    def put_secret(self, secret: Secret) -> None:
        self._upsert(
            "secrets",
            ("secret_id", "name", "environment", "data"),
            (secret.secret_id, secret.name, secret.environment, encode(secret)),
            keys=1,
        )

    def get_secret(self, secret_id: str) -> Secret | None:
        return self._one(Secret, "SELECT data FROM secrets WHERE secret_id = ?", (secret_id,))

    def find_secret(self, name: str, environment: str) -> Secret | None:
        return self._one(
            Secret, "SELECT data FROM secrets WHERE name = ? AND environment = ?", (name, environment)
        )

    def list_secrets(self, environment: str) -> list[Secret]:
        return self._many(
            Secret,
            "SELECT data FROM secrets WHERE environment = ? AND name != '' ORDER BY rowid",
            (environment,),
        )

    def delete_secret(self, secret_id: str) -> None:
        self._exec("DELETE FROM secrets WHERE secret_id = ?", (secret_id,))

    # -- tokens
    def put_token(self, token: Token) -> None:
        self._upsert("tokens", ("token_id", "data"), (token.token_id, encode(token)), keys=1)

    def get_token(self, token_id: str) -> Token | None:
        return self._one(Token, "SELECT data FROM tokens WHERE token_id = ?", (token_id,))

    def list_tokens(self) -> list[Token]:
        return self._many(Token, "SELECT data FROM tokens ORDER BY rowid")

    # -- mounts and images
    def put_mount(self, mount: Mount) -> None:
        self._upsert("mounts", ("mount_id", "data"), (mount.mount_id, encode(mount)), keys=1)

    def get_mount(self, mount_id: str) -> Mount | None:
        return self._one(Mount, "SELECT data FROM mounts WHERE mount_id = ?", (mount_id,))

    def put_image(self, image: ImageRecord) -> None:
        self._upsert(
            "images",
            ("image_id", "content_hash", "data"),
            (image.image_id, image.content_hash, encode(image)),
            keys=1,
        )

    def get_image(self, image_id: str) -> ImageRecord | None:
        return self._one(ImageRecord, "SELECT data FROM images WHERE image_id = ?", (image_id,))

    def find_image(self, content_hash: str) -> ImageRecord | None:
        return self._one(
            ImageRecord, "SELECT data FROM images WHERE content_hash = ? ORDER BY rowid DESC", (content_hash,)
        )

    def list_images(self) -> list[ImageRecord]:
        return self._many(ImageRecord, "SELECT data FROM images ORDER BY rowid")

    # -- spawned calls
    def put_call(self, call: CallRecord) -> None:
        self._upsert("calls", ("function_call_id", "data"), (call.function_call_id, encode(call)), keys=1)

    def get_call(self, function_call_id: str) -> CallRecord | None:
        return self._one(CallRecord, "SELECT data FROM calls WHERE function_call_id = ?", (function_call_id,))

    def put_input(self, item: StoredInput) -> None:
        self.put_inputs([item])

    def put_inputs(self, items: list[StoredInput]) -> None:
        """Write a batch of inputs in one transaction: all of them, or none."""
        sql = _upsert_sql("inputs", ("input_id", "function_call_id", "done", "data"), keys=1)
        rows = [(i.input_id, i.function_call_id, int(i.done), encode(i)) for i in items]
        with self._lock, self._guard():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def unfinished_inputs(self) -> list[StoredInput]:
        return self._many(StoredInput, "SELECT data FROM inputs WHERE done = 0 ORDER BY rowid")

    def inputs_for_call(self, function_call_id: str) -> list[StoredInput]:
        return self._many(
            StoredInput,
            "SELECT data FROM inputs WHERE function_call_id = ? ORDER BY rowid",
            (function_call_id,),
        )

    def put_output(self, output: OutputRecord) -> None:
        with self._lock, self._guard():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    _upsert_sql("outputs", ("input_id", "function_call_id", "data"), keys=1),
                    (output.input_id, output.function_call_id, encode(output)),
                )
                self._conn.execute("UPDATE inputs SET done = 1 WHERE input_id = ?", (output.input_id,))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def outputs_for_call(self, function_call_id: str) -> list[OutputRecord]:
        return self._many(
            OutputRecord,
            "SELECT data FROM outputs WHERE function_call_id = ? ORDER BY rowid",
            (function_call_id,),
        )

    # -- schedules
    def put_schedule(self, schedule: ScheduleRecord) -> None:
        self._upsert(
            "schedules",
            ("function_id", "app_id", "data"),
            (schedule.function_id, schedule.app_id, encode(schedule)),
            keys=1,
        )

    def delete_schedule(self, function_id: str) -> None:
        self._exec("DELETE FROM schedules WHERE function_id = ?", (function_id,))

    def list_schedules(self) -> list[ScheduleRecord]:
        return self._many(ScheduleRecord, "SELECT data FROM schedules ORDER BY rowid")


def read_schedules(path: Path | str) -> list[ScheduleRecord]:
    """The schedules in a database another process (a running server) owns, read without writing to it; an
    empty list where the database has none yet. Unavailable, naming the file, where it cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise database_error(str(path), exc) from None
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        rows = conn.execute("SELECT data FROM schedules ORDER BY rowid").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # a server from before schema 4
        raise database_error(str(path), exc) from None
    except sqlite3.Error as exc:
        raise database_error(str(path), exc) from None
    finally:
        conn.close()
    return [decode(ScheduleRecord, row[0]) for row in rows]
