"""The runtime interface: start, stop and observe containers; every runtime implements it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass
class Capabilities:
    gpus: bool = False
    volumes: bool = False
    memory_limits: bool = False
    limits_reason: str = "hard memory/CPU limits are not enforced by this runtime"  # why not, when not
    custom_images: bool = False
    max_containers: int = 8


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
    build_upper: str = ""  # Image.run_function: every filesystem write lands here, to become an image layer
    # Image.run_function on a runtime that commits the container itself as the layer (the docker runtime): its
    # config then holds none of the container's settings (the env reaches its process another way).
    build_commit: bool = False


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
    async def shutdown(self) -> None: ...
