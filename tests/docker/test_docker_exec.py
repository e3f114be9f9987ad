"""Commands exec'd into a Docker container through the docker CLI: pipes, a PTY, environment, kill."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from onshore.runtimes.base import EXEC_TO_STDOUT, FD_STDERR, FD_STDOUT, ExecSpec, PtySize
from onshore.runtimes.docker.engine import RunConfig
from onshore.runtimes.docker.exec import DockerExec, start_docker_exec
from tests.docker.conftest import Scratch

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on PATH (docker.io)")


async def read_all(process: DockerExec, fd: int) -> bytes:
    out = b""
    while chunk := await process.read(fd):
        out += chunk
    return out


async def container(scratch: Scratch, base_image: str) -> str:
    return await scratch.engine.run(
        RunConfig(
            image=base_image,
            command=["sleep", "600"],
            name=scratch.name("exec"),
            env={"FROM_THE_CONTAINER": "yes"},
            workdir="/srv",
            labels=scratch.labels,
        )
    )


async def test_pipes_env_workdir_and_exit_code(scratch: Scratch, base_image: str, tmp_path: Path) -> None:
    cid = await container(scratch, base_image)
    script = "read line; echo got-$line; echo $FROM_THE_CONTAINER $EXTRA; pwd; echo err >&2; exit 5"
    spec = ExecSpec(["sh", "-c", script], env={"EXTRA": "s3cret value"})
    process = await start_docker_exec(scratch.engine, cid, "/srv", spec, tmp_path)
    await process.write(b"hello\n")
    await process.close_stdin()
    out, err = await asyncio.gather(read_all(process, FD_STDOUT), read_all(process, FD_STDERR))
    assert await process.wait() == 5
    assert out == b"got-hello\nyes s3cret value\n/srv\n" and err == b"err\n", (out, err)

    # Another working directory; stderr merged into stdout.
    spec = ExecSpec(["sh", "-c", "pwd; echo err >&2"], workdir="/tmp", stderr=EXEC_TO_STDOUT)
    process = await start_docker_exec(scratch.engine, cid, "/srv", spec, tmp_path)
    await process.close_stdin()
    # Both reach stdout; docker's CLI copies the container's two streams separately, so their order may vary.
    assert sorted((await read_all(process, FD_STDOUT)).splitlines()) == [b"/tmp", b"err"]
    assert await process.wait() == 0


async def test_a_terminal(scratch: Scratch, base_image: str, tmp_path: Path) -> None:
    cid = await container(scratch, base_image)
    spec = ExecSpec(
        ["sh", "-c", "echo ready; read answer; echo got-$answer; tty; stty size; echo $TERM; exit 3"],
        pty=PtySize(rows=30, cols=100, env={"TERM": "xterm-mono"}),
    )
    process = await start_docker_exec(scratch.engine, cid, "/srv", spec, tmp_path)
    output = b""
    while b"ready" not in output:
        output += await asyncio.wait_for(process.read(FD_STDOUT), 30)
    await process.write(b"hi\r")
    rest = await asyncio.wait_for(read_all(process, FD_STDOUT), 30)
    text = (output + rest).decode()
    assert await process.wait() == 3
    assert "got-hi" in text and "/dev/pts/" in text and "30 100" in text and "xterm-mono" in text, text


async def test_kill_ends_the_command_inside_the_container(
    scratch: Scratch, base_image: str, tmp_path: Path
) -> None:
    cid = await container(scratch, base_image)
    spec = ExecSpec(["sh", "-c", "sleep 321 & sleep 321; wait"])
    process = await start_docker_exec(scratch.engine, cid, "/srv", spec, tmp_path)
    listing = "for d in /proc/[0-9]*; do tr '\\000' ' ' < $d/cmdline; echo; done"

    async def commands() -> list[bytes]:
        _, ps = await scratch.engine.exec(cid, ["sh", "-c", listing])
        return [line.strip() for line in ps.splitlines()]

    for _ in range(100):
        if (await commands()).count(b"sleep 321") == 2:
            break
        await asyncio.sleep(0.1)
    assert (await commands()).count(b"sleep 321") == 2
    process.kill()
    assert await asyncio.wait_for(process.wait(), 30) != 0
    left = await commands()
    assert b"sleep 321" not in left and b"sh -c sleep 321 & sleep 321; wait" not in left, left
