"""Fixtures for tests against a real Docker engine: a private dockerd, the base image stand-in, scratch."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from onshore.runtimes.docker.engine import DockerEngine
from tests.docker.daemon import (
    Dockerd,
    DockerdUnavailable,
    remove_everything_but,
    start_dockerd,
    stop_dockerd,
)
from tests.docker.standin import DEFAULT_BASE_IMAGE, SLIM_IMAGE, ensure_standin

# Images worth keeping in the cached data root between sessions.
KEEP_IMAGES = {DEFAULT_BASE_IMAGE, SLIM_IMAGE}


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd for this test session; skips (with the reason) where none can run."""
    try:
        daemon = start_dockerd()
    except DockerdUnavailable as e:
        pytest.skip(str(e))
    try:
        remove_everything_but(daemon, KEEP_IMAGES)  # leftovers of a session that crashed
        yield daemon
    finally:
        try:
            remove_everything_but(daemon, KEEP_IMAGES)
        finally:
            stop_dockerd(daemon)


@pytest.fixture(scope="session")
def base_image(dockerd: Dockerd) -> str:
    """The tag of the modal client's default base image, here a stand-in built from Debian packages."""
    try:
        return ensure_standin(dockerd, DEFAULT_BASE_IMAGE)
    except DockerdUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def slim_image(dockerd: Dockerd) -> str:
    """The tag of a registry image without Python (debian:bookworm-slim), here a Debian minbase stand-in."""
    try:
        return ensure_standin(dockerd, SLIM_IMAGE)
    except DockerdUnavailable as e:
        pytest.skip(str(e))


@dataclass
class Scratch:
    """One test's share of the engine: names and labels unique to the test, and what it made to remove."""

    engine: DockerEngine
    labels: dict[str, str]
    images: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        return f"onshore-test-{what}-{self.labels['onshore-test']}"

    def tag(self, what: str) -> str:
        tag = f"onshore-test/{what}:{self.labels['onshore-test']}"
        self.images.append(tag)
        return tag


@pytest.fixture
async def scratch(dockerd: Dockerd) -> AsyncIterator[Scratch]:
    """A DockerEngine on the private daemon; the containers (by label) and images the test made are
    removed after it, and the removal is checked."""
    engine = DockerEngine(dockerd.url)
    area = Scratch(engine, {"onshore-test": uuid.uuid4().hex[:12]})
    try:
        yield area
    finally:
        for cid in await engine.list_containers(area.labels):
            await engine.remove(cid)
        for tag in reversed(area.images):
            with contextlib.suppress(Exception):
                await engine.remove_image(tag, force=True)
        left = await engine.list_containers(area.labels)
        images_left = [t for t in area.images if await engine.has_image(t)]
        await engine.close()
        assert not left and not images_left, f"left behind: containers {left}, images {images_left}"
