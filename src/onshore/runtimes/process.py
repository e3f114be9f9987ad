"""The process runtime: each container is a local subprocess running the client's container entrypoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from onshore.runtimes.base import FD_STDERR, FD_STDOUT, Capabilities, ContainerSpec, ExitSink, LogSink
from onshore.runtimes.pyenv import ClientEnvironments

log = logging.getLogger("onshore.runtime.process")

# Variables a container inherits from the server's environment; everything else comes from the spec.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "TMPDIR", "OPENBLAS_CORETYPE")


@dataclass
class _Proc:
    process: asyncio.subprocess.Process
    readers: list[asyncio.Task[None]]
    waiter: asyncio.Task[None] | None = None


class ProcessRuntime:
    name = "process"

    def __init__(self, state_dir: Path, envs: ClientEnvironments, max_containers: int) -> None:
        self.capabilities = Capabilities(max_containers=max_containers)
        self._state_dir = state_dir
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._envs = envs
        self._procs: dict[str, _Proc] = {}
        self._on_log: LogSink = lambda t, fd, s: None
        self._on_exit: ExitSink = lambda t, rc: None

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None:
        self._on_log, self._on_exit = on_log, on_exit

    async def start(self, spec: ContainerSpec) -> int:
        python = await self._envs.python_for(spec.client_version)
        args_path = self._state_dir / f"{spec.task_id}.args"
        args_path.write_bytes(spec.container_args)
        env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
        env.update(spec.env)
        env["MODAL_CONTAINER_ARGUMENTS_PATH"] = str(args_path)
        env["MODAL_IS_REMOTE"] = "1"
        env["MODAL_TASK_ID"] = spec.task_id
        env["PYTHONUNBUFFERED"] = "1"
        process = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "modal._container_entrypoint",
            cwd=spec.code_dir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a stop ends everything it started
        )
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(self._pump(spec.task_id, FD_STDOUT, process.stdout)),
            asyncio.create_task(self._pump(spec.task_id, FD_STDERR, process.stderr)),
        ]
        entry = _Proc(process, readers)
        self._procs[spec.task_id] = entry
        entry.waiter = asyncio.create_task(self._wait(spec.task_id, entry))
        return process.pid

    async def _pump(self, task_id: str, fd: int, stream: asyncio.StreamReader) -> None:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            self._on_log(task_id, fd, chunk.decode(errors="replace"))

    async def _wait(self, task_id: str, entry: _Proc) -> None:
        rc = await entry.process.wait()
        # End anything the container left behind in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*entry.readers), 2.0)
        self._procs.pop(task_id, None)
        with contextlib.suppress(FileNotFoundError):
            (self._state_dir / f"{task_id}.args").unlink()
        self._on_exit(task_id, rc)

    async def stop(self, task_id: str, grace: float) -> None:
        entry = self._procs.get(task_id)
        if entry is None:
            return
        pid = entry.process.pid
        if grace > 0:
            # SIGINT lets the entrypoint run @modal.exit hooks and shut down cleanly.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.shield(entry.process.wait()), grace)
            except TimeoutError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if entry.waiter is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(entry.waiter)

    def running(self) -> list[str]:
        return list(self._procs)

    def pid_of(self, task_id: str) -> int | None:
        entry = self._procs.get(task_id)
        return entry.process.pid if entry else None

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.stop(t, 2.0) for t in list(self._procs)), return_exceptions=True)
