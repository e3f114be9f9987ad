"""Fixtures for fault tests: a server of the module's own, so malformed and hostile traffic stays there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("faults") / "data").start()
    try:
        yield proc
    finally:
        proc.stop()
