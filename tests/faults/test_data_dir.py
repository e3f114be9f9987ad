"""A locked, full or read-only data dir on a real server: one-line errors naming the path, nothing partial."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grpclib.const import Status
from modal_proto import api_pb2

from tests.conftest import ServerProcess, clean_env, raw_status, raw_stub, run_modal
from tests.faults.store_helpers import files_in, request, unshare_works

needs_unshare = pytest.mark.skipif(not unshare_works(), reason="needs root and unshare to mount a tmpfs")


async def test_a_locked_database_answers_unavailable_and_publishes_nothing(
    fresh_server: ServerProcess,
) -> None:
    fresh_server.start()
    database = fresh_server.data_dir / "onshore.db"
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        async with raw_stub(fresh_server) as stub:
            started = time.monotonic()
            create = api_pb2.AppCreateRequest(description="locked-out", app_state=api_pb2.APP_STATE_EPHEMERAL)
            status, message = await raw_status(fresh_server, stub.AppCreate, create)
            assert time.monotonic() - started < 4.0
            assert status == Status.UNAVAILABLE, message
            assert f"The database {database} is unavailable: database is locked" in message
            # Reads go on while the lock is held; the app whose write failed is nowhere.
            apps = await stub.AppList(api_pb2.AppListRequest(), metadata=fresh_server.token_metadata)
            assert "locked-out" not in [a.description for a in apps.apps]
            other.execute("ROLLBACK")
            created = await stub.AppCreate(create, metadata=fresh_server.token_metadata)
            apps = await stub.AppList(api_pb2.AppListRequest(), metadata=fresh_server.token_metadata)
            assert [a.app_id for a in apps.apps if a.description == "locked-out"] == [created.app_id]
    finally:
        other.close()
    assert "AppCreate failed" not in fresh_server.log_text()  # no INTERNAL, no traceback of it


@needs_unshare
async def test_a_full_disk_on_upload_is_507_naming_the_path_and_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    blobs = data_dir / "blobs"
    blobs.mkdir(parents=True)
    # The blob store on a 1 MiB tmpfs of the server's own (a private mount namespace).
    mount = 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$@"'
    server = ServerProcess(data_dir, wrapper=["unshare", "-m", "sh", "-c", mount, str(blobs)])
    try:
        server.start()
        async with raw_stub(server) as stub:
            big = await stub.BlobCreate(
                api_pb2.BlobCreateRequest(content_length=3 << 20), metadata=server.token_metadata
            )
            code, text = request("PUT", big.upload_urls.items[0], b"x" * (3 << 20))
            assert code == 507, text
            assert f"Cannot store the upload in {blobs}: No space left on device" in text
            assert files_in(server, blobs) == ["parts"]  # the partial upload is gone
            # The space came back: a blob that fits goes through, and the server serves on.
            small = await stub.BlobCreate(
                api_pb2.BlobCreateRequest(content_length=5), metadata=server.token_metadata
            )
            assert request("PUT", small.upload_urls.items[0], b"hello")[0] == 200
            assert files_in(server, blobs) == sorted([small.blob_id, "parts"])
    finally:
        server.stop()


def _server_command(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "onshore.cli.main", "server", "--data-dir", str(data_dir), "--port", "0"]


def _one_line_error(result: subprocess.CompletedProcess[str], data_dir: Path, cause: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "WARNING" not in line and "INFO" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onshore: ") and str(data_dir) in lines[0] and cause in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_a_data_dir_below_a_regular_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "data"
    result = subprocess.run(
        _server_command(data_dir), capture_output=True, text=True, env=clean_env(), timeout=60
    )
    _one_line_error(result, data_dir, "Not a directory")


@needs_unshare
def test_a_read_only_data_dir_is_a_one_line_error_and_is_left_as_it_was(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    fresh_server.stop()
    data_dir = fresh_server.data_dir
    before = sorted(p.name for p in data_dir.iterdir())
    # The populated data dir, bound read-only in a private mount namespace.
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", script, str(data_dir), *_server_command(data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=60)
    _one_line_error(result, data_dir, "Read-only file system")
    assert sorted(p.name for p in data_dir.iterdir()) == before


async def test_data_files_are_owner_only_whatever_the_umask(fresh_server: ServerProcess) -> None:
    old = os.umask(0)  # the server inherits it: every mode below is set on purpose, not by the umask
    try:
        fresh_server.start()
    finally:
        os.umask(old)
    result = run_modal(fresh_server, "secret", "create", "onshore-mode-test", "PASSWORD=hunter2")
    assert result.returncode == 0, result.output
    data = b"file content\n" * 100
    async with raw_stub(fresh_server) as stub:
        blob = await stub.BlobCreate(
            api_pb2.BlobCreateRequest(content_length=len(data)), metadata=fresh_server.token_metadata
        )
        assert request("PUT", blob.upload_urls.items[0], data)[0] == 200
        put = api_pb2.MountPutFileRequest(
            sha256_hex=__import__("hashlib").sha256(data).hexdigest(), data=data
        )
        status, message = await raw_status(fresh_server, stub.MountPutFile, put)
        assert status == Status.OK, message
    root = fresh_server.data_dir
    assert "hunter2" in (root / "onshore.db").read_bytes().decode(errors="replace") + (
        root / "onshore.db-wal"
    ).read_bytes().decode(errors="replace")
    checked = []
    for folder in (
        root,
        root / "blobs",
        root / "blobs" / "parts",
        root / "files",
        *(root / "files").iterdir(),
    ):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink():
                assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry
                checked.append(entry.relative_to(root).as_posix())
    for expected in (
        "onshore.db",
        "onshore.db-wal",
        "onshore.db-shm",
        "token.json",
        "blob.key",
        "server.json",
    ):
        assert expected in checked
    assert f"blobs/{blob.blob_id}" in checked and any(c.startswith("files/") for c in checked)
