"""The store with its database locked or its directory unusable: quick, precise errors; nothing half-done."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onshore.config import DataDir, DataDirError
from onshore.errors import Unavailable
from onshore.models import AppState
from onshore.services.apps import AppService
from onshore.services.clock import FakeClock
from onshore.store.sqlite import SqliteStore


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[SqliteStore, sqlite3.Connection]]:
    """A store whose database another connection holds an exclusive lock on."""
    store = SqliteStore(tmp_path / "onshore.db")
    other = sqlite3.connect(tmp_path / "onshore.db", isolation_level=None)
    try:
        yield store, other
    finally:
        other.close()
        store.close()


def test_a_locked_database_answers_unavailable_quickly_naming_the_file(
    locked: tuple[SqliteStore, sqlite3.Connection], tmp_path: Path
) -> None:
    store, other = locked
    apps = AppService(store, FakeClock())
    other.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        apps.create("locked", AppState.EPHEMERAL, "main")
    assert time.monotonic() - started < 3.0  # the busy timeout, not 5 s per write
    message = str(caught.value)
    assert str(tmp_path / "onshore.db") in message and "database is locked" in message
    assert "another process holds a lock" in message and "\n" not in message
    assert apps.all_apps() == []  # the app whose write failed is not published
    other.execute("ROLLBACK")
    app = apps.create("after", AppState.EPHEMERAL, "main")
    assert [a.app_id for a in apps.all_apps()] == [app.app_id]
    assert [a.app_id for a in store.list_apps()] == [app.app_id]


def test_a_failed_publish_or_stop_leaves_the_app_as_it_was(
    locked: tuple[SqliteStore, sqlite3.Connection],
) -> None:
    store, other = locked
    apps = AppService(store, FakeClock())
    app = apps.create("x", AppState.INITIALIZING, "main")
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(Unavailable):
        apps.publish(
            app.app_id,
            name="web",
            state=AppState.DEPLOYED,
            function_ids={"f": "fu-1"},
            class_ids={},
            client_version="",
        )
    same = apps.get(app.app_id)
    assert (same.state, same.name, same.version, same.function_ids) == (AppState.INITIALIZING, "", 0, {})
    assert apps.deployed("web") is None


async def test_a_failed_stop_leaves_the_app_running(locked: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, other = locked
    apps = AppService(store, FakeClock())
    app = apps.create("x", AppState.EPHEMERAL, "main")
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(Unavailable):
        await apps.stop(app.app_id, "test")
    assert apps.get(app.app_id).state == AppState.EPHEMERAL and apps.is_live(app.app_id)


def test_the_database_and_its_wal_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "onshore.db"
    path.touch(mode=0o644)  # as an older server left it
    old = os.umask(0)
    try:
        store = SqliteStore(path)
        AppService(store, FakeClock()).create("x", AppState.EPHEMERAL, "main")
    finally:
        os.umask(old)
    try:
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["onshore.db", "onshore.db-shm", "onshore.db-wal"]
        for name in files:
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        store.close()


def test_a_database_that_cannot_be_opened_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        Unavailable, match=f"The database {blocker}/onshore.db is unavailable: Not a directory"
    ):
        SqliteStore(blocker / "onshore.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(Unavailable, match="file is not a database"):
        SqliteStore(garbage)


def test_a_data_dir_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataDirError) as caught:
        DataDir(blocker / "data").ensure()
    assert str(caught.value).startswith(f"Cannot use the data directory {blocker}/data: ")
    assert "Not a directory" in str(caught.value)


def test_private_files_are_written_whole_and_owner_only(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    old = os.umask(0)
    try:
        data.write_json(data.token_file, {"a": 1})
        key = data.blob_key()
    finally:
        os.umask(old)
    assert data.read_json(data.token_file) == {"a": 1} and len(key) == 32
    for name in ("token.json", "blob.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.key", "token.json"]
