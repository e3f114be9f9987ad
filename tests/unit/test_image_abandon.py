"""Image builds no app waits for: an app that stopped starts none, and one that failed abandons its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onshore.errors import Conflict, Unavailable
from onshore.images.model import LayerRequest
from onshore.services.clock import SystemClock
from onshore.services.images import FAILED, READY, ImageInputs, ImageService
from onshore.store.memory import memory_store
from tests.unit.test_images import BASE, FakeBuilder


def _service(builder: FakeBuilder, live: set[str]) -> ImageService:
    inputs = ImageInputs(
        mount_checksum=lambda mount_id: "",
        materialize_mount=lambda mount_id: Path("/nonexistent"),
        secret_env=lambda ids: {},
        app_live=lambda app_id: app_id in live,
    )
    return ImageService(memory_store(), builder, inputs, SystemClock())


def _layer(app_id: str) -> LayerRequest:
    return LayerRequest([*BASE, "RUN sleep 120"], builder_version="2025.06", app_id=app_id)


async def _settled(service: ImageService, image_id: str) -> str:
    for _ in range(100):
        status = service.get(image_id).status
        if status != "building":
            return status
        await asyncio.sleep(0.01)
    return "building"


async def test_a_stopped_app_starts_no_build() -> None:
    builder = FakeBuilder()
    service = _service(builder, live=set())
    with pytest.raises(Conflict, match="has stopped"):
        service.get_or_create(_layer("ap-gone"))
    assert builder.jobs == []


async def test_a_failed_app_abandons_the_build_only_it_waits_for() -> None:
    builder = FakeBuilder()
    builder.release.clear()  # builds run until released
    service = _service(builder, live={"ap-a", "ap-b"})
    record = service.get_or_create(_layer("ap-a"))
    await asyncio.sleep(0.01)
    service.abandon("ap-a")
    assert await _settled(service, record.image_id) == FAILED
    assert "the app that asked for it failed" in service.get(record.image_id).error

    # Wanted by two apps: one failing leaves it to the other.
    shared = service.get_or_create(_layer("ap-a"))
    assert service.get_or_create(_layer("ap-b")).image_id == shared.image_id
    await asyncio.sleep(0.01)
    service.abandon("ap-a")
    builder.release.set()
    assert await _settled(service, shared.image_id) == READY


async def test_a_build_being_cancelled_is_not_joined() -> None:
    builder = FakeBuilder()
    builder.release.clear()
    service = _service(builder, live={"ap-a", "ap-b"})
    record = service.get_or_create(_layer("ap-a"))
    await asyncio.sleep(0.01)
    service.abandon("ap-a")
    # Before the cancelled build has wound down, another app asks for the same layer: it is told to come
    # back (the client retries UNAVAILABLE) rather than joining a build that is about to fail.
    with pytest.raises(Unavailable, match="being cancelled"):
        service.get_or_create(_layer("ap-b"))
    assert await _settled(service, record.image_id) == FAILED
    builder.release.set()
    again = service.get_or_create(_layer("ap-b"))
    assert await _settled(service, again.image_id) == READY
