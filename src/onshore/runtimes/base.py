"""The backend seam: the runtime interface (start, stop and observe containers) and what a backend is."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from onshore.images.model import Builder
from onshore.models import ImageConfig

FD_STDOUT = 1
FD_STDERR = 2
FD_INFO = 3

LogSink = Callable[[str, int, str], None]  # (task_id, file descriptor, text)
# (task_id, return code (negative: killed by that signal), what happened when the runtime knows more, e.g.
# "ran out of memory (its limit is 256 MiB)", else "")
ExitSink = Callable[[str, int, str], None]


# Where every runtime shows a container its serialized ContainerArguments and the client package it runs.
ARGS_TARGET = "/onshore/container-arguments"
PKG_TARGET = "/pkg"


@dataclass(frozen=True)
class GpuDevice:
    """One GPU of a node: its index (as nvidia-smi numbers it), its Modal type and memory."""

    index: int
    model: str  # a Modal GPU type: "T4", "A100-80GB", "H100"...
    memory_mb: int
    uuid: str = ""  # NVML's "GPU-..." id; "" for an emulated GPU
    emulated: bool = False  # declared with `onshore server --gpus`: no device behind it

    @property
    def label(self) -> str:
        return f"{self.model} #{self.index}" + (" (emulated)" if self.emulated else "")


@dataclass(frozen=True)
class Resources:
    """What one node of a backend offers containers (a cluster lists one per node)."""

    cpus: float
    memory_mb: int
    gpus: tuple[GpuDevice, ...] = ()
    gpu_note: str = ""  # why it has no GPUs (no NVML...), for `onshore status`


@dataclass
class Capabilities:
    """What a backend can do; the services read these instead of asking which backend it is."""

    gpus: bool = False  # schedules containers onto GPUs (gpu=...)
    volumes: bool = False  # mounts volumes into containers (volumes={...})
    memory_limits: bool = False
    limits_reason: str = "hard memory/CPU limits are not enforced by this runtime"  # why not, when not
    # Runs images of a registry (FROM, Image.from_registry): add_python= then needs python-build-standalone.
    registry_images: bool = False
    # Containers share the server's own CPUs: past its core count, scale-out waits for CPU headroom.
    shares_host_cpus: bool = False
    # Containers may sit on a network that does not reach the HTTP port: blobs are also served on a unix
    # socket beside the API's (BackendConfig.blob_socket).
    blob_socket: bool = False
    max_containers: int = 8


@dataclass(frozen=True)
class VolumeBind:
    """A host directory (a volume's overlay, mounted on the host) to show at target in the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass
class ContainerSpec:
    task_id: str
    app_id: str
    function_id: str
    container_args: bytes  # serialized ContainerArguments
    code_dir: str  # host directory holding the files that appear under /root
    client_version: str  # version of the modal client the container runs
    env: dict[str, str] = field(default_factory=dict)
    image: ImageConfig | None = None  # None: the default image (the host's Python, as the server runs it)
    memory_limit_mb: int = 0  # a hard limit: over it the container is killed (0: none)
    cpu_limit: float = 0.0  # a hard limit in cores (0: none)
    # An Image.run_function container: what its backend's builder asked of it (where its writes go, or that
    # it is committed). Only the runtime of that backend reads it; None for every other container.
    image_build: object | None = None
    volumes: list[VolumeBind] = field(default_factory=list)
    gpus: list[GpuDevice] = field(
        default_factory=list
    )  # the container's own GPUs (CUDA_VISIBLE_DEVICES is set)


# Where an exec'd command's stdout/stderr go: kept for readers, dropped, or (stderr only) merged into stdout.
EXEC_PIPE = "pipe"
EXEC_DEVNULL = "devnull"
EXEC_TO_STDOUT = "stdout"


@dataclass
class PtySize:
    rows: int = 24
    cols: int = 80
    env: dict[str, str] = field(default_factory=dict)  # TERM, COLORTERM... of the caller's terminal


@dataclass
class ExecSpec:
    """A command to run inside a running container, with the container's environment and working dir."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the container's environment
    workdir: str = ""  # "" : the container's working directory
    pty: PtySize | None = None  # a terminal: stdout and stderr both arrive on stdout
    stdout: str = EXEC_PIPE
    stderr: str = EXEC_PIPE


class ExecProcess(Protocol):
    """A command running inside a container (see Runtime.exec)."""

    pid: int

    async def read(self, fd: int) -> bytes:
        """The next output chunk of FD_STDOUT or FD_STDERR; b"" once that stream has ended."""
        ...

    async def write(self, data: bytes) -> None:
        """Write to its stdin (the terminal's input with a PTY)."""
        ...

    async def close_stdin(self) -> None: ...
    async def wait(self) -> int:
        """Its return code; negative: killed by that signal."""
        ...

    def kill(self) -> None:
        """End it and everything it started, at once."""
        ...


class Runtime(Protocol):
    name: str
    capabilities: Capabilities

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None: ...
    def warm_up(self) -> None:
        """Prepare ahead of the first container (e.g. start spare processes); may do nothing."""
        ...

    async def start(self, spec: ContainerSpec) -> int:
        """Start the container; returns an id to show (a pid for the process runtime)."""
        ...

    async def stop(self, task_id: str, grace: float) -> None: ...
    async def exec(self, task_id: str, spec: ExecSpec) -> ExecProcess:
        """Run a command in a running container; errors.NotFound if it is not running, InvalidArgument if
        the command cannot be started."""
        ...

    def running(self) -> list[str]: ...
    async def namespace_pid(self, task_id: str) -> int | None:
        """A host pid in the container's mount namespace (where a volume reload swaps its overlay); None
        where there is none (the container ended, or the runtime has no such thing)."""
        ...

    async def shutdown(self) -> None: ...


@dataclass
class BackendConfig:
    """What the composition root tells a backend's build(): the server's paths, URLs and options."""

    root: Path  # the server's data dir: each backend keeps its files in folders of its own below it
    max_containers: int
    container_url: str  # where containers reach the API (a unix socket URL where there is one)
    http_url: str  # the server's HTTP port (blobs)
    blob_socket: str = ""  # the name of the unix socket beside the API's that serves blobs too ("": none)
    hidden: list[Path] = field(default_factory=list)  # what containers and builds must not see
    isolation: str = "auto"  # "none": no namespaces (onshore server --isolation none)
    docker_host: str = ""  # the docker backend's engine ("": the environment's, e.g. DOCKER_HOST)
    docker_network: str = ""
    gpus: tuple[GpuDevice, ...] = ()  # this machine's GPUs (read from NVML, or emulated with --gpus)
    gpu_note: str = ""  # why there are none


@dataclass
class Backend:
    """One way of running containers and building their images, as its package's build(config) makes it."""

    runtime: Runtime
    builder: Builder
    nodes: list[Resources]  # what each node offers containers (one entry on a single machine)
    # Awaited in order by the server's start (before it serves) and in reverse order by its stop.
    starts: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    closes: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def capabilities(self) -> Capabilities:
        return self.runtime.capabilities

    @property
    def cpus(self) -> float:
        return sum(node.cpus for node in self.nodes)


def host_resources() -> Resources:
    """This machine's CPUs (those this process may run on) and memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        memory = 0
    return Resources(cpus=float(cpus), memory_mb=int(memory))
