"""The build model: what the client asks for (a layer), what a builder gets (a job), the builder interface."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from onshore.images.dockerfile import Instruction
from onshore.models import ImageConfig


class BuildFailed(Exception):
    """A build that cannot succeed: the message says which command failed (or what is missing) and why."""


@dataclass
class BuildFunction:
    """Image.run_function: a function run once on the base image, whose filesystem changes form the layer."""

    function_id: str
    definition: bytes
    globals: bytes
    input: bytes  # a serialized FunctionInput, or b""


@dataclass
class LayerRequest:
    """One ImageGetOrCreate, free of protobuf: a layer on top of zero or one base images."""

    commands: list[str]
    base_images: list[tuple[str, str]] = field(default_factory=list)  # (docker tag, image id)
    context_files: dict[str, bytes] = field(default_factory=dict)
    context_mount_id: str = ""
    build_function: BuildFunction | None = None
    secret_ids: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    registry_auth: bool = False
    volume_mounts: int = 0
    force_build: bool = False
    builder_version: str = ""
    app_id: str = ""


@dataclass
class BuildJob:
    """Everything a builder needs to build one layer."""

    image_id: str
    content_hash: str
    instructions: list[Instruction]
    parent: ImageConfig | None  # the base image's config; None for a layer that starts FROM a registry image
    context_files: dict[str, bytes] = field(default_factory=dict)
    context_dir: Path | None = None  # a host dir laid out as '/' holding the context mount's files
    build_args: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # the layer's secrets, for its RUN commands
    build_function: BuildFunction | None = None
    force: bool = False
    runner: FunctionRunner | None = None  # runs build_function (the image service's)


LogFn = Callable[[str], None]


class Builder(Protocol):
    """Builds image layers for one runtime. `name` is part of every content hash it builds."""

    name: str

    async def build(self, job: BuildJob, log: LogFn) -> ImageConfig:
        """Build the layer; return the image's config. Raise BuildFailed with a clear reason on failure."""
        ...


CommitFn = Callable[[str], Awaitable[None]]  # (task id of the build container)


class FunctionRunner(Protocol):
    """Runs an Image.run_function function once, in a build container whose filesystem becomes the layer."""

    async def run(
        self,
        function_id: str,
        payload: bytes,
        log_line: LogFn,
        *,
        target: object,
        commit: CommitFn | None = None,
    ) -> None:
        """`target`: what the builder's own runtime needs to set up the build container (it becomes
        ContainerSpec.image_build: e.g. where every write lands); `commit`, when given, is awaited with the
        container's task id once the function succeeded and while the container still runs, to make an image
        of its filesystem. BuildFailed says why the function did not succeed."""
        ...


def content_hash(
    request: LayerRequest,
    parent_hashes: list[str],
    context_mount_checksum: str,
    runtime: str,
) -> str:
    """The cache key of a layer: the same commands and inputs on the same base build the same image."""
    h = hashlib.sha256()

    def part(label: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)

    part("runtime", runtime)
    part("builder", request.builder_version)
    for tag, parent in zip((t for t, _ in request.base_images), parent_hashes, strict=True):
        part("base", f"{tag}={parent}")
    for command in request.commands:
        part("cmd", command)
    for name in sorted(request.context_files):
        part("file", f"{name}={hashlib.sha256(request.context_files[name]).hexdigest()}")
    part("mount", context_mount_checksum)
    for key in sorted(request.build_args):
        part("arg", f"{key}={request.build_args[key]}")
    for secret_id in sorted(request.secret_ids):
        part("secret", secret_id)
    part("gpu", str(request.gpu))
    if request.build_function is not None:
        part("fn-def", request.build_function.definition)
        part("fn-globals", request.build_function.globals)
        part("fn-input", request.build_function.input)
    return h.hexdigest()
