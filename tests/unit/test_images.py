"""The images domain with a fake builder: Dockerfile parsing, content-addressed caching, builds, logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onshore.errors import InvalidArgument
from onshore.images import dockerfile
from onshore.images.model import BuildFailed, BuildJob, LayerRequest, LogFn
from onshore.models import ImageConfig, ImageRecord
from onshore.services.clock import SystemClock
from onshore.services.images import BUILDING, FAILED, READY, ImageInputs, ImageService
from onshore.store.memory import memory_store
from onshore.store.sqlite import SqliteStore

BASE = ["FROM python:3.11.12-slim-bookworm", "RUN apt-get update"]


# ------------------------------------------------------------------ Dockerfile parsing
def test_parse_instruction_forms() -> None:
    parsed = dockerfile.parse(
        [
            "FROM python:3.11.12-slim-bookworm",
            'CMD ["sleep", "172800"]',
            "RUN echo a \\\n && echo b",
            "ENV A=1 B='two words'",
            "ENV LEGACY some value",
            "COPY --from=ghcr.io/astral-sh/uv:latest /uv /.uv/uv",
            "ARG X=1",
            "WORKDIR /work",
            "# a comment",
            "",
        ]
    )
    assert [i.keyword for i in parsed] == ["FROM", "CMD", "RUN", "ENV", "ENV", "COPY", "ARG", "WORKDIR"]
    assert parsed[0].args == ["python:3.11.12-slim-bookworm"]
    assert parsed[1].exec_form and parsed[1].args == ["sleep", "172800"]
    assert parsed[2].text == "echo a && echo b" and not parsed[2].exec_form
    assert parsed[3].args == ["A=1", "B=two words"]
    assert parsed[4].args == ["LEGACY=some value"]
    assert parsed[5].flags == {"from": "ghcr.io/astral-sh/uv:latest"} and parsed[5].args == ["/uv", "/.uv/uv"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROMAGE x", "Unknown Dockerfile instruction 'FROMAGE'"),
        ("VOLUME /data", "use modal.Volume"),
        ("HEALTHCHECK CMD true", "HEALTHCHECK"),
        ("FROM python:3.11 AS build", "multi-stage"),
        ("RUN --mount=type=cache,target=/x pip install y", "RUN options"),
        ("COPY onlyone", "at least one source and a destination"),
        ("SHELL /bin/bash", "JSON list"),
        ("ENV A", "KEY=VALUE"),
    ],
)
def test_parse_refuses_with_the_line(line: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        dockerfile.parse([line])


def test_expand_variables() -> None:
    assert (
        dockerfile.expand("/opt/$NAME/${SUB}x:$MISSING", {"NAME": "venv", "SUB": "bin"}) == "/opt/venv/binx:"
    )


# ------------------------------------------------------------------ the service, with a fake builder
class FakeBuilder:
    name = "fake"

    def __init__(self) -> None:
        self.jobs: list[BuildJob] = []
        self.fail_with = ""
        self.release = asyncio.Event()
        self.release.set()

    async def build(self, job: BuildJob, log: LogFn) -> ImageConfig:
        self.jobs.append(job)
        for instruction in job.instructions:
            log(f"step {instruction.line}\n")
        await self.release.wait()
        if self.fail_with:
            raise BuildFailed(self.fail_with)
        parent = job.parent or ImageConfig(python_version="3.11.7")
        env = dict(parent.env)
        for instruction in job.instructions:
            if instruction.keyword == "ENV":
                env.update(dockerfile.split_pair(p) for p in instruction.args)
        return ImageConfig(python_version=parent.python_version, env=env)


def _service(store: SqliteStore, builder: FakeBuilder) -> ImageService:
    inputs = ImageInputs(
        mount_checksum=lambda mount_id: f"sum-of-{mount_id}",
        materialize_mount=lambda mount_id: Path("/nonexistent") / mount_id,
        secret_env=lambda ids: {f"SECRET_{i}": "x" for i in range(len(ids))},
    )
    return ImageService(store, builder, inputs, SystemClock())


async def _finish(service: ImageService, image_id: str) -> ImageRecord:
    async for update in service.join(image_id, "", 5.0):
        if update.finished is not None:
            return update.finished
    raise AssertionError("the build did not finish")


async def test_build_once_then_cache_hit() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    first = service.get_or_create(LayerRequest(BASE, builder_version="2025.06"))
    assert first.status == BUILDING
    done = await _finish(service, first.image_id)
    assert done.status == READY and done.python_version == "3.11.7" and done.runtime == "fake"
    again = service.get_or_create(LayerRequest(BASE, builder_version="2025.06"))
    assert again.image_id == first.image_id and again.status == READY
    assert len(builder.jobs) == 1
    # A new service on the same store (a restarted server) still has it.
    assert (
        _service(store, builder).get_or_create(LayerRequest(BASE, builder_version="2025.06")).status == READY
    )
    assert len(builder.jobs) == 1


async def test_force_build_rebuilds_under_the_same_id() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    first = service.get_or_create(LayerRequest(BASE))
    await _finish(service, first.image_id)
    forced = service.get_or_create(LayerRequest(BASE, force_build=True))
    assert forced.status == BUILDING and forced.image_id == first.image_id
    assert (await _finish(service, forced.image_id)).status == READY
    assert len(builder.jobs) == 2 and builder.jobs[1].force


async def test_concurrent_requests_share_one_build() -> None:
    store, builder = memory_store(), FakeBuilder()
    builder.release.clear()
    service = _service(store, builder)
    a = service.get_or_create(LayerRequest(BASE))
    b = service.get_or_create(LayerRequest(BASE))
    assert a.image_id == b.image_id
    builder.release.set()
    await _finish(service, a.image_id)
    assert len(builder.jobs) == 1


async def test_content_hash_covers_parent_files_and_args() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    base = await _finish(service, service.get_or_create(LayerRequest(BASE)).image_id)
    other_base = await _finish(service, service.get_or_create(LayerRequest([*BASE, "ENV X=1"])).image_id)
    layer = ["FROM base", "RUN python -m pip install -r /.requirements.txt"]
    ids = {
        service.get_or_create(
            LayerRequest(layer, [("base", base.image_id)], {"/.requirements.txt": b"six"})
        ).image_id,
        service.get_or_create(
            LayerRequest(layer, [("base", base.image_id)], {"/.requirements.txt": b"attrs"})
        ).image_id,
        service.get_or_create(
            LayerRequest(layer, [("base", other_base.image_id)], {"/.requirements.txt": b"six"})
        ).image_id,
        service.get_or_create(
            LayerRequest(
                layer, [("base", base.image_id)], {"/.requirements.txt": b"six"}, build_args={"A": "1"}
            )
        ).image_id,
        service.get_or_create(
            LayerRequest(["FROM base", "COPY . /"], [("base", base.image_id)], context_mount_id="mo-1")
        ).image_id,
        service.get_or_create(
            LayerRequest(["FROM base", "COPY . /"], [("base", base.image_id)], context_mount_id="mo-2")
        ).image_id,
    }
    assert len(ids) == 6


async def test_child_gets_parent_config_and_secrets() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    base = await _finish(service, service.get_or_create(LayerRequest([*BASE, "ENV A=1"])).image_id)
    child = service.get_or_create(
        LayerRequest(["FROM base", "ENV B=2"], [("base", base.image_id)], secret_ids=["st-1"])
    )
    done = await _finish(service, child.image_id)
    assert done.config is not None and done.config.env == {"A": "1", "B": "2"}
    assert builder.jobs[-1].parent == base.config
    assert builder.jobs[-1].secret_env == {"SECRET_0": "x"}
    assert service.config_for(child.image_id) == done.config


async def test_failed_build_reports_and_is_retried() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    builder.fail_with = "'RUN false' failed with exit code 1"
    first = service.get_or_create(LayerRequest(BASE))
    done = await _finish(service, first.image_id)
    assert done.status == FAILED and "RUN false" in done.error
    with pytest.raises(InvalidArgument, match="not built"):
        service.config_for(first.image_id)
    builder.fail_with = ""
    retry = service.get_or_create(LayerRequest(BASE))
    assert retry.status == BUILDING
    assert (await _finish(service, retry.image_id)).status == READY


async def test_bad_layers_fail_without_building() -> None:
    store, builder = memory_store(), FakeBuilder()
    service = _service(store, builder)
    bad = service.get_or_create(LayerRequest(["FROM python:3.11", "VOLUME /x"]))
    assert bad.status == FAILED and "modal.Volume" in bad.error
    gpu = service.get_or_create(LayerRequest(BASE, gpu=True))
    assert gpu.status == FAILED and "GPU" in gpu.error
    child = service.get_or_create(LayerRequest(["FROM base", "ENV A=1"], [("base", bad.image_id)]))
    assert child.status == FAILED and bad.image_id in child.error
    assert builder.jobs == []


async def test_join_streams_logs_live_and_resumes_after_an_entry() -> None:
    store, builder = memory_store(), FakeBuilder()
    builder.release.clear()
    service = _service(store, builder)
    record = service.get_or_create(LayerRequest([*BASE, "ENV A=1"]))
    stream = service.join(record.image_id, "", 5.0)
    first = await anext(stream)
    assert [e.text for e in first.entries][:1] == ["step FROM python:3.11.12-slim-bookworm\n"]
    assert first.finished is None
    builder.release.set()
    rest = [u async for u in stream]
    assert rest[-1].finished is not None and rest[-1].finished.status == READY
    # A client that reconnects after the second line gets only what follows it.
    later = [u async for u in service.join(record.image_id, str(first.entries[1].entry_id), 5.0)]
    texts = [e.text for u in later for e in u.entries]
    assert texts == ["step ENV A=1\n"] and later[-1].finished is not None


async def test_join_times_out_while_building() -> None:
    store, builder = memory_store(), FakeBuilder()
    builder.release.clear()
    service = _service(store, builder)
    record = service.get_or_create(LayerRequest(BASE))
    updates = [u async for u in service.join(record.image_id, "2", 1.0)]
    assert all(u.finished is None for u in updates)
    builder.release.set()
    await _finish(service, record.image_id)


async def test_restart_fails_interrupted_builds() -> None:
    store, builder = memory_store(), FakeBuilder()
    builder.release.clear()
    service = _service(store, builder)
    record = service.get_or_create(LayerRequest(BASE))
    await service.shutdown()
    assert store.get_image(record.image_id).status == FAILED  # type: ignore[union-attr]
    interrupted = ImageRecord("im-x", "hash-x", b"", 1.0, status=BUILDING)
    store.put_image(interrupted)
    restarted = _service(store, FakeBuilder())
    restarted.restore()
    after = store.get_image("im-x")
    assert after is not None and after.status == FAILED and "stopped during this build" in after.error
