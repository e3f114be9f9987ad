"""The Docker engine's data as Onshore uses it: build context files, run settings, image config, states."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class ContextFile:
    """A build context file with its permission bits (plain bytes in a context mean mode 0o644)."""

    data: bytes
    mode: int = 0o644


@dataclass
class RunConfig:
    """What `DockerEngine.run` starts: a container with these settings, started at once."""

    image: str
    command: list[str]
    name: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None  # None: the image's WorkingDir
    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # (host path, container path, read only)
    memory_limit_bytes: int | None = None  # also the memory+swap limit: no swap beyond it
    nano_cpus: int | None = None  # CPU quota in 1e-9 CPUs
    gpu_ids: list[str] = field(default_factory=list)  # GPUs (UUIDs) given through NVIDIA's device requests
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "none"  # "none", "host", "bridge" or a network name
    init: bool = True  # run docker's init as PID 1: forwards signals, reaps zombies
    entrypoint: list[str] | None = None  # None: the image's; []: none
    shm_size_bytes: int | None = None  # None: the engine's default (64 MiB)
    files: Path | None = None  # a tar archive unpacked at / in the container before it starts
    stdin_open: bool = False  # keep a stdin open that nobody writes to (a `read` in it waits for ever)
    stop_signal: str = "SIGINT"  # "": the image's (a committed container passes its own on to the image)


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a container inherits."""

    id: str
    env: dict[str, str]
    workdir: str
    cmd: list[str] | None
    entrypoint: list[str] | None
    user: str = ""
    shell: list[str] | None = None  # what SHELL set; None: /bin/sh -c


class ExitStatus(NamedTuple):
    """How a container ended: its exit code (128+N when signal N ended it); whether the OOM killer fired."""

    code: int
    oom_killed: bool


class ExecResult(NamedTuple):
    exit_code: int
    output: bytes  # stdout and stderr interleaved


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created, running, paused, restarting, removing, exited, dead
    running: bool
    exit_code: int
    oom_killed: bool
    labels: dict[str, str]
    pid: int = 0  # its main process on the engine's host; 0 when it does not run
