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
ExitSink = Callable[[str, int], None]  # (task_id, return code; negative: killed by that signal)


@dataclass
class Capabilities:
    gpus: bool = False
    volumes: bool = False
    memory_limits: bool = False
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
    def running(self) -> list[str]: ...
    async def shutdown(self) -> None: ...
