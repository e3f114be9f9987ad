"""Commands run inside a Docker container (`modal container exec`, `modal shell`) through the docker CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from onshore.errors import Conflict
from onshore.runtimes.base import ExecProcess, ExecSpec
from onshore.runtimes.docker.engine import DockerEngine, DockerError
from onshore.runtimes.host_exec import ExecTarget, start_exec

log = logging.getLogger("onshore.runtime.docker")

# Every process an exec starts carries this variable (with a value of its own), so it can be found and
# ended inside the container: killing the docker CLI alone would leave the command running there.
MARKER_VARIABLE = "ONSHORE_EXEC_ID"
_KILL_MARKED = (
    'for d in /proc/[0-9]*; do tr "\\000" "\\n" < "$d/environ" 2>/dev/null | grep -qxF "$1" '
    '&& kill -9 "${d#/proc/}" 2>/dev/null; done; true'
)
# Settings of the docker CLI the server's environment may hold (a remote engine's TLS).
_CLI_PASSTHROUGH = ("PATH", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "SSL_CERT_FILE")


def docker_cli() -> str:
    """The docker CLI, which enters containers for exec; Conflict naming what is missing if there is none."""
    found = shutil.which("docker")
    if found is None:
        raise Conflict(
            "`modal container exec` and `modal shell` on the docker runtime need the docker CLI (`docker`, "
            "e.g. Debian's docker.io or docker-ce-cli) on the server's PATH, and it has none"
        )
    return found


def cli_host(url: str) -> str:
    """The engine URL as the docker CLI's -H takes it."""
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            return "tcp://" + url[len(scheme) :]
    return url


class DockerExec:
    """An exec'd command: the docker CLI attached to it, plus a way to end it inside the container."""

    def __init__(self, inner: ExecProcess, engine: DockerEngine, cid: str, marker: str) -> None:
        self._inner = inner
        self._engine = engine
        self._cid = cid
        self._marker = marker
        self._killer: asyncio.Task[None] | None = None
        self.pid = inner.pid

    async def read(self, fd: int) -> bytes:
        return await self._inner.read(fd)

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    async def close_stdin(self) -> None:
        await self._inner.close_stdin()

    async def wait(self) -> int:
        rc = await self._inner.wait()
        if self._killer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._killer), 10)
        return rc

    def kill(self) -> None:
        if self._killer is None:
            self._killer = asyncio.get_running_loop().create_task(self._kill_inside())
        self._inner.kill()

    async def _kill_inside(self) -> None:
        argv = ["/bin/sh", "-c", _KILL_MARKED, "sh", f"{MARKER_VARIABLE}={self._marker}"]
        try:
            await self._engine.exec(self._cid, argv)
        except DockerError as exc:  # the container is gone already: so is the command
            log.debug("ending exec %s in %s: %s", self._marker, self._cid, exc)


async def start_docker_exec(
    engine: DockerEngine, cid: str, cwd: str, spec: ExecSpec, state_dir: Path
) -> DockerExec:
    """Run spec.argv in the container `cid` (its environment plus spec.env, in spec.workdir or `cwd`), with
    pipes or a PTY as spec says. The command runs as `docker exec -i [-t] ...`; its environment travels
    through the CLI's own (`-e NAME`), never on its command line."""
    cli = docker_cli()
    marker = uuid.uuid4().hex
    names = list(spec.env)
    if spec.pty is not None:
        names += [*spec.pty.env, "TERM"]
    enter = [cli, "-H", cli_host(engine.url), "exec", "-i"]
    if spec.pty is not None:
        enter.append("-t")
    enter += ["-e", f"{MARKER_VARIABLE}={marker}"]
    for name in dict.fromkeys(names):
        enter += ["-e", name]
    enter.append(cid)
    env = {k: os.environ[k] for k in _CLI_PASSTHROUGH if k in os.environ}
    config = state_dir / "docker-cli"
    config.mkdir(parents=True, exist_ok=True)
    env["DOCKER_CONFIG"] = str(config)  # not the server user's ~/.docker: no credential helpers, no plugins
    process = await start_exec(ExecTarget(0, env, cwd, enter), spec)
    return DockerExec(process, engine, cid, marker)
