"""Images: content-addressed layers, built once by the runtime's builder, followed live through build logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from onshore import ids
from onshore.errors import Conflict, InvalidArgument, NotFound, OnshoreError, Unavailable, quoted
from onshore.images import dockerfile
from onshore.images.buildlog import BuildLogs, LogEntry
from onshore.images.model import (
    Builder,
    BuildFailed,
    BuildJob,
    FunctionRunner,
    LayerRequest,
    content_hash,
)
from onshore.models import ImageConfig, ImageRecord
from onshore.services.clock import Clock
from onshore.store.base import ImageStore

log = logging.getLogger("onshore.images")

BUILDING, READY, FAILED = "building", "ready", "failed"
MAX_CONCURRENT_BUILDS = 2


@dataclass
class JoinUpdate:
    """One message of a build's stream: new log lines, and the finished record once the build is over."""

    entries: list[LogEntry]
    finished: ImageRecord | None = None


@dataclass
class ImageInputs:
    """What the image service reads from other domains: mounts and secrets."""

    mount_checksum: Callable[[str], str]
    materialize_mount: Callable[[str], Path]  # a host dir laid out as '/' with the mount's files
    secret_env: Callable[[list[str]], dict[str, str]]
    app_live: Callable[[str], bool] = lambda app_id: True  # whether an app may still use what it builds


def image_config(store: ImageStore, image_id: str) -> ImageConfig | None:
    """The config containers of this image run with; None for an image without one (an old server's)."""
    if not image_id:
        return None
    record = store.get_image(image_id)
    if record is None:
        raise NotFound(f"Image {image_id} not found")
    if record.status != READY:
        raise InvalidArgument(f"Image {image_id} is not built ({record.status}): {record.error}")
    return record.config


class ImageService:
    def __init__(
        self,
        store: ImageStore,
        builder: Builder,
        inputs: ImageInputs,
        clock: Clock,
        runner: FunctionRunner | None = None,
    ) -> None:
        """runner: runs the functions of Image.run_function layers (None: such layers fail to build)."""
        self._store = store
        self._builder = builder
        self._runner = runner
        self._inputs = inputs
        self._clock = clock
        self.logs = BuildLogs()
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._wanted_by: dict[str, set[str]] = {}  # a build in progress: the apps waiting for it
        self._abandoned: set[str] = set()  # builds cancelled because no app waits for them any more
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_BUILDS)

    @property
    def runtime(self) -> str:
        return self._builder.name

    def restore(self) -> None:
        """After a restart: a build that was running when the server stopped is failed, so it is rebuilt."""
        for record in self._store.list_images():
            if record.status == BUILDING:
                record.status = FAILED
                record.error = "The server stopped during this build; it is rebuilt on the next request."
                self._store.put_image(record)

    def get(self, image_id: str) -> ImageRecord:
        record = self._store.get_image(image_id)
        if record is None:
            raise NotFound(f"Image {image_id} not found")
        return record

    def config_for(self, image_id: str) -> ImageConfig | None:
        return image_config(self._store, image_id)

    # ---------------------------------------------------------------- get or create
    def get_or_create(self, request: LayerRequest) -> ImageRecord:
        """The image for this layer: a cache hit, a build in progress, or a new build started now."""
        if request.app_id and not self._inputs.app_live(request.app_id):
            # The client gave up (a refused feature, an error): nothing would ever use this build.
            raise Conflict(f"App {request.app_id} has stopped: its images are not built")
        parents = [self.get(image_id) for _, image_id in request.base_images]
        refusal = self._refusal(request, parents)
        mount_id = request.context_mount_id
        mount_checksum = self._inputs.mount_checksum(mount_id) if mount_id else ""
        key = content_hash(request, [p.content_hash for p in parents], mount_checksum, self.runtime)
        record = self._store.find_image(key)
        if record is not None and record.status == READY and not request.force_build:
            return record
        if record is not None and record.image_id in self._abandoned:
            # Its build is winding down (cancelled for a failed app): joining it would fail, and a new build
            # must wait until the old one has let go. The client retries UNAVAILABLE.
            raise Unavailable(
                f"The build of image {record.image_id} is being cancelled (the app that asked for it "
                "failed); try again in a moment"
            )
        if record is not None and record.status == BUILDING and record.image_id in self._builds:
            self._wanted_by[record.image_id].add(request.app_id)
            return record
        record = ImageRecord(
            image_id=record.image_id if record is not None else ids.new_id("image"),
            content_hash=key,
            definition="\n".join(request.commands).encode(),
            created_at=self._clock.now(),
            status=BUILDING,
            runtime=self.runtime,
            base_image_ids=[p.image_id for p in parents],
        )
        self.logs.start(record.image_id)
        if refusal:
            return self._fail(record, refusal)
        try:
            instructions = dockerfile.parse(request.commands)
        except InvalidArgument as exc:
            return self._fail(record, str(exc))
        self._store.put_image(record)
        job = BuildJob(
            image_id=record.image_id,
            content_hash=key,
            instructions=instructions,
            parent=parents[0].config if parents else None,
            context_files=dict(request.context_files),
            build_args=dict(request.build_args),
            build_function=request.build_function,
            force=request.force_build,
            runner=self._runner,
        )
        self._builds[record.image_id] = asyncio.get_running_loop().create_task(
            self._build(record, job, request)
        )
        self._wanted_by[record.image_id] = {request.app_id}
        return record

    def abandon(self, app_id: str) -> None:
        """An app failed while it started (a refused feature, an error): builds only it waited for stop."""
        for image_id, apps in list(self._wanted_by.items()):
            if app_id not in apps:
                continue
            apps.discard(app_id)
            task = self._builds.get(image_id)
            if not apps and task is not None:
                log.info("image build %s abandoned: the app that asked for it (%s) failed", image_id, app_id)
                self._abandoned.add(image_id)
                task.cancel()

    def _refusal(self, request: LayerRequest, parents: list[ImageRecord]) -> str:
        if len(parents) > 1:
            return "An image layer with several base images is not supported."
        for parent in parents:
            if parent.status != READY:
                return f"Its base image {parent.image_id} did not build: {parent.error}"
        if request.gpu:
            return "Building images on a GPU (gpu= on an image layer) is not supported yet."
        if request.volume_mounts:
            return (
                "Volumes in Image.run_commands(..., volumes=...) builds are not supported yet "
                "(Image.run_function(..., volumes=...) mounts them)."
            )
        if request.registry_auth:
            return "Private registries (registry secrets) are not supported yet."
        return ""

    def _fail(self, record: ImageRecord, error: str) -> ImageRecord:
        record.status = FAILED
        record.error = error
        self._store.put_image(record)
        self.logs.append(record.image_id, f"Image build failed: {error}\n")
        self.logs.finish(record.image_id)
        return record

    async def _build(self, record: ImageRecord, job: BuildJob, request: LayerRequest) -> None:
        image_id = record.image_id
        started = time.monotonic()
        try:
            async with self._slots:
                last = job.instructions[-1].line if job.instructions else "Image.run_function"
                log.info("building image %s for app %s: %s", image_id, request.app_id or "-", last[:120])
                if request.context_mount_id:
                    job.context_dir = await asyncio.to_thread(
                        self._inputs.materialize_mount, request.context_mount_id
                    )
                job.secret_env = self._inputs.secret_env(request.secret_ids)
                config = await self._builder.build(job, lambda text: self.logs.append(image_id, text))
        except BuildFailed as exc:
            self._fail(record, str(exc))
        except asyncio.CancelledError:
            if image_id in self._abandoned:
                self._fail(record, "The build was cancelled: the app that asked for it failed.")
                return
            self._fail(record, "The build was cancelled: the server is stopping.")
            raise
        except OnshoreError as exc:  # what the request names does not exist or cannot be used
            self._fail(record, str(exc))
        except Exception as exc:  # a bug in a builder must not leave the client waiting forever
            log.exception("image build %s failed unexpectedly", image_id)
            self._fail(record, f"Onshore could not build this image: {type(exc).__name__}: {exc}")
        else:
            record.status = READY
            record.error = ""
            record.config = config
            record.python_version = config.python_version
            record.build_seconds = round(time.monotonic() - started, 3)
            self._store.put_image(record)
            self.logs.finish(image_id)
        finally:
            self._builds.pop(image_id, None)
            self._wanted_by.pop(image_id, None)
            self._abandoned.discard(image_id)

    # ---------------------------------------------------------------- following a build
    async def join(self, image_id: str, last_entry_id: str, timeout: float) -> AsyncIterator[JoinUpdate]:
        """Log lines after `last_entry_id` as they come, then the finished record; ends early at `timeout`."""
        self.get(image_id)
        try:
            last = int(last_entry_id or 0)
        except ValueError:
            raise InvalidArgument(f"Bad last_entry_id {quoted(last_entry_id)}") from None
        deadline = self._clock.monotonic() + max(1.0, min(timeout or 55.0, 300.0))
        while True:
            # The record first: once it says the build is over, every line of it is already in the log.
            record = self.get(image_id)
            done = record.status != BUILDING
            entries = self.logs.since(image_id, last)
            if entries or done:
                if entries:
                    last = entries[-1].entry_id
                yield JoinUpdate(entries, record if done else None)
                if done:
                    return
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            await self.logs.wait(image_id, last, remaining)

    async def shutdown(self) -> None:
        builds = dict(self._builds)
        for task in builds.values():
            task.cancel()
        await asyncio.gather(*builds.values(), return_exceptions=True)
        for image_id in builds:  # a build cancelled before it began has not recorded its end
            record = self._store.get_image(image_id)
            if record is not None and record.status == BUILDING:
                self._fail(record, "The build was cancelled: the server is stopping.")
