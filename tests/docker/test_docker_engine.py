"""DockerEngine against a real (private) dockerd: builds, containers, logs, OOM, signals, exec, labels."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from onshore.runtimes.docker.engine import (
    BuildError,
    ContextFile,
    DockerEngine,
    DockerError,
    NotFoundError,
    RunConfig,
)
from tests.docker.conftest import Scratch
from tests.docker.daemon import Dockerd, dockerd_version


class Lines:
    """Collects on_log calls and checks they arrive on the event loop's thread."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.thread = threading.get_ident()
        self.off_thread = 0

    def build(self, line: str) -> None:
        self._add(1, line)

    def run(self, fd: int, text: str) -> None:
        self._add(fd, text)

    def _add(self, fd: int, text: str) -> None:
        self.off_thread += threading.get_ident() != self.thread
        self.items.append((fd, text))

    def text(self, fd: int = 1) -> str:
        return "".join(t for f, t in self.items if f == fd)


async def wait_for_text(lines: Lines, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in lines.text():
        assert time.monotonic() < deadline, f"{text!r} never came; got {lines.text()!r}"
        await asyncio.sleep(0.05)


async def test_ping(dockerd: Dockerd) -> None:
    engine = DockerEngine(dockerd.url)
    try:
        version = await engine.ping()
    finally:
        await engine.close()
    assert version and version in dockerd_version()


async def test_unreachable_engine_is_a_clear_error(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-such.sock"
    engine = DockerEngine(url)
    try:
        with pytest.raises(DockerError, match=f"engine unreachable at {url}: No such file or directory"):
            await engine.ping()
    finally:
        await engine.close()


async def test_context_paths_are_checked(tmp_path: Path) -> None:
    engine = DockerEngine(f"unix://{tmp_path}/no-such.sock")  # refused before any engine call
    try:
        with pytest.raises(DockerError, match="not a relative path inside the context"):
            await engine.build("FROM x", {"../escape": b""}, "t:1", print)
        with pytest.raises(DockerError, match="reserved by Onshore's image builder"):
            await engine.build("FROM x", {".dockerignore": b""}, "t:1", print)
    finally:
        await engine.close()


async def test_build_layers(scratch: Scratch, base_image: str) -> None:
    engine = scratch.engine
    first, logs = scratch.tag("first"), Lines()
    dockerfile = "\n".join(
        [
            f"FROM {base_image}",
            "RUN python -m pip --version && python -m venv /tmp/venv && echo venv-ok",
            "ENV A=1",
            "WORKDIR /work",
            "COPY . /work/",
        ]
    )
    context = {
        "hello.txt": b"hello from the context\n",
        "bin/run.sh": ContextFile(b"#!/bin/sh\necho ran\n", 0o755),
    }
    image_id = await engine.build(dockerfile, context, first, logs.build)
    assert image_id.startswith("sha256:")
    out = logs.text()
    assert "pip " in out and "venv-ok" in out, out
    assert logs.off_thread == 0 and all(t.endswith("\n") for _, t in logs.items)
    config = await engine.image_config(first)
    assert config.id == image_id
    assert config.env["A"] == "1" and "/usr/local/bin" in config.env["PATH"]
    assert config.workdir == "/work" and config.cmd == ["python3"] and config.entrypoint is None

    # A second layer on the first, by its tag: no pull. The Dockerfile and the ignore file stay out of COPY.
    second, logs2 = scratch.tag("second"), Lines()
    dockerfile2 = "\n".join(
        [
            f"FROM {first}",
            "RUN cat hello.txt && bin/run.sh && ls -A /work && echo A=$A",
            'CMD ["python", "-c", "print(\'hi\')"]',
        ]
    )
    second_id = await engine.build(dockerfile2, {}, second, logs2.build)
    out2 = logs2.text()
    assert "hello from the context" in out2 and "ran\n" in out2 and "A=1" in out2, out2
    assert ".onshore.Dockerfile" not in out2 and ".dockerignore" not in out2
    assert (await engine.image_config(second)).cmd == ["python", "-c", "print('hi')"]
    assert second_id != image_id and await engine.has_image(second)
    assert not await engine.has_image("onshore-test/never-built:latest")


async def test_failing_build_step(scratch: Scratch, base_image: str) -> None:
    logs = Lines()
    dockerfile = f"FROM {base_image}\nRUN echo one && echo the-last-words >&2 && exit 3\nRUN echo never\n"
    with pytest.raises(BuildError) as info:
        await scratch.engine.build(dockerfile, {}, scratch.tag("broken"), logs.build)
    err = info.value
    assert err.step == "RUN echo one && echo the-last-words >&2 && exit 3"
    assert "the-last-words" in err.output_tail and "one" in err.output_tail
    assert "\x1b" not in err.output_tail and "intermediate container" not in err.output_tail
    assert "returned a non-zero code: 3" in str(err) and err.step in str(err)
    assert "never" not in logs.text()


async def test_build_base_missing_is_not_pulled(scratch: Scratch, dockerd: Dockerd) -> None:
    with pytest.raises(DockerError, match="onshore-test/absent"):
        await scratch.engine.build("FROM onshore-test/absent:1\n", {}, scratch.tag("orphan"), Lines().build)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


async def test_build_steps_reach_the_network(scratch: Scratch, base_image: str) -> None:
    if not _reachable("pypi.org", 443):
        pytest.skip("pypi.org:443 is unreachable from this machine")
    logs = Lines()
    dockerfile = f"FROM {base_image}\nRUN python -m pip download --no-deps --dest /tmp/dl six && ls /tmp/dl\n"
    await scratch.engine.build(dockerfile, {}, scratch.tag("net"), logs.build)
    assert ".whl" in logs.text(), logs.text()


async def test_run_env_bind_workdir_logs_exit(scratch: Scratch, base_image: str, tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "file.txt").write_text("from the host\n")
    script = (
        "echo out:$FOO; cat /in/file.txt; pwd; echo to-stderr >&2; "
        "touch /in/nope 2>/dev/null || echo read-only-ok; echo written > /out/x; exit 7"
    )
    engine = scratch.engine
    cid = await engine.run(
        RunConfig(
            image=base_image,
            command=["sh", "-c", script],
            name=scratch.name("run"),
            env={"FOO": "bar"},
            workdir="/tmp",
            binds=[(str(inputs), "/in", True), (str(outputs), "/out", False)],
            labels=scratch.labels,
        )
    )
    logs = Lines()
    await asyncio.wait_for(engine.logs(cid, logs.run), 60)
    status = await engine.wait(cid)
    assert status == (7, False) and status.code == 7
    assert logs.text(1) == "out:bar\nfrom the host\n/tmp\nread-only-ok\n"
    assert logs.text(2) == "to-stderr\n" and logs.off_thread == 0
    assert (outputs / "x").read_text() == "written\n"
    state = await engine.inspect(cid)
    assert not state.running and state.exit_code == 7 and scratch.labels.items() <= state.labels.items()
    await engine.remove(cid)
    await engine.remove(cid)  # gone already: fine
    with pytest.raises(NotFoundError):
        await engine.inspect(cid)


async def test_memory_limit_oom_kill(scratch: Scratch, base_image: str) -> None:
    cid = await scratch.engine.run(
        RunConfig(
            image=base_image,
            command=["python", "-c", "a = bytearray(512 * 1024 * 1024); print('survived')"],
            name=scratch.name("oom"),
            memory_limit_bytes=64 * 1024 * 1024,
            labels=scratch.labels,
        )
    )
    logs = Lines()
    await asyncio.wait_for(scratch.engine.logs(cid, logs.run), 60)
    code, oom_killed = await scratch.engine.wait(cid)
    assert oom_killed and code == 137 and "survived" not in logs.text()


TRAP_INT = (
    "trap 'echo got-sigint; echo sigint > /out/marker; exit 0' INT; echo ready; while :; do sleep 0.1; done"
)


async def test_stop_sends_sigint_first(scratch: Scratch, base_image: str, tmp_path: Path) -> None:
    engine = scratch.engine
    cid = await engine.run(
        RunConfig(
            image=base_image,
            command=["sh", "-c", TRAP_INT],
            name=scratch.name("sigint"),
            binds=[(str(tmp_path), "/out", False)],
            labels=scratch.labels,
        )
    )
    logs = Lines()
    follow = asyncio.create_task(engine.logs(cid, logs.run))
    await wait_for_text(logs, "ready")
    started = time.monotonic()
    await engine.stop(cid, grace=20)
    assert time.monotonic() - started < 10
    assert (tmp_path / "marker").read_text() == "sigint\n"
    assert await engine.wait(cid) == (0, False)
    await asyncio.wait_for(follow, 10)
    assert "got-sigint" in logs.text()
    await engine.stop(cid, grace=1)  # stopped already: fine


async def test_stop_kills_after_grace(scratch: Scratch, base_image: str) -> None:
    engine = scratch.engine
    cid = await engine.run(
        RunConfig(
            image=base_image,
            command=["sh", "-c", "trap '' INT; echo ready; while :; do sleep 0.1; done"],
            name=scratch.name("stubborn"),
            init=False,  # sh as PID 1, ignoring SIGINT
            labels=scratch.labels,
        )
    )
    logs = Lines()
    follow = asyncio.create_task(engine.logs(cid, logs.run))
    await wait_for_text(logs, "ready")
    started = time.monotonic()
    await engine.stop(cid, grace=1.5)
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 10, elapsed
    assert await engine.wait(cid) == (137, False)
    await asyncio.wait_for(follow, 10)


async def test_exec_and_cancelled_logs(scratch: Scratch, base_image: str) -> None:
    engine = scratch.engine
    cid = await engine.run(
        RunConfig(
            image=base_image,
            command=["python", "-c", "import time; print('up', flush=True); time.sleep(600)"],
            name=scratch.name("exec"),
            labels=scratch.labels,
        )
    )
    logs = Lines()
    follow = asyncio.create_task(engine.logs(cid, logs.run))
    await wait_for_text(logs, "up")
    follow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(follow, 5)
    code, output = await engine.exec(cid, ["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    assert code == 3 and b"hi\n" in output and b"oops\n" in output
    code, output = await engine.exec(cid, ["sh", "-c", "pwd; echo $X"], workdir="/etc", env={"X": "y"})
    assert (code, output) == (0, b"/etc\ny\n")
    code, output = await engine.exec(cid, ["no-such-binary"])
    assert code in (126, 127) and b"no-such-binary" in output, (code, output)
    await engine.stop(cid, grace=5)
    assert (await engine.wait(cid)).code in (0, 130)  # python's KeyboardInterrupt


async def test_list_by_labels(scratch: Scratch, base_image: str) -> None:
    engine = scratch.engine
    ids = {}
    for role, command in [("a", ["sleep", "600"]), ("b", ["true"])]:
        ids[role] = await engine.run(
            RunConfig(
                image=base_image,
                command=command,
                name=scratch.name(role),
                labels={**scratch.labels, "role": role},
            )
        )
    await engine.wait(ids["b"])
    assert set(await engine.list_containers(scratch.labels)) == set(ids.values())
    assert await engine.list_containers({**scratch.labels, "role": "a"}) == [ids["a"]]
    assert await engine.list_containers(scratch.labels, running_only=True) == [ids["a"]]
    assert await engine.list_containers({"onshore-test": "nobody"}) == []
    with pytest.raises(DockerError, match="Conflict|already in use"):
        await engine.run(RunConfig(image=base_image, command=["true"], name=scratch.name("a")))
    for cid in ids.values():
        await engine.remove(cid)
    assert await engine.list_containers(scratch.labels) == []


async def test_container_reaches_host_unix_socket(scratch: Scratch, base_image: str, tmp_path: Path) -> None:
    """The way containers talk to the server: a host unix socket in a bind-mounted directory, no network."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readline())
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(sock_dir / "server.sock"))
    client = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/onshore/server.sock'); "
        "s.sendall(b'ping\\n'); print(s.makefile().readline().strip())"
    )
    try:
        cid = await scratch.engine.run(
            RunConfig(
                image=base_image,
                command=["python", "-c", client],
                name=scratch.name("socket"),
                binds=[(str(sock_dir), "/run/onshore", False)],
                network="none",
                labels=scratch.labels,
            )
        )
        logs = Lines()
        await asyncio.wait_for(scratch.engine.logs(cid, logs.run), 60)
        assert await scratch.engine.wait(cid) == (0, False), logs.text(2)
    finally:
        server.close()
        await server.wait_closed()
    assert received == [b"ping\n"] and logs.text() == "pong\n"


async def test_commit_keeps_the_config_of_the_image_and_not_an_exec_environment(
    scratch: Scratch, base_image: str
) -> None:
    engine = scratch.engine
    cid = await engine.run(
        RunConfig(
            image=base_image,
            command=[],
            name=scratch.name("commit"),
            labels=scratch.labels,
            init=False,
            entrypoint=["/bin/sh", "-c", "read _ || true"],  # waits on a stdin nobody writes to
            stdin_open=True,
            stop_signal="",
        )
    )
    chunks: list[str] = []
    step = 'echo made > /made.txt; echo step-out; echo step-err >&2; test -n "$TOKEN"'
    code, output = await engine.exec(
        cid, ["sh", "-c", step], env={"TOKEN": "t0ken-value"}, on_output=chunks.append
    )
    assert (code, output) == (0, b"") and sorted("".join(chunks).split()) == ["step-err", "step-out"], chunks
    assert ("/made.txt", 1) in await engine.diff(cid)
    await engine.stop(cid, 0.0)
    image_id = await engine.commit(cid, config_of=base_image, message="RUN the step")
    scratch.images.append(image_id)
    await engine.remove(cid)
    base, made = await engine.image_config(base_image), await engine.image_config(image_id)
    assert (made.env, made.cmd, made.workdir, made.user) == (base.env, base.cmd, base.workdir, base.user)
    assert not made.entrypoint and not base.entrypoint
    probe = await engine.run(
        RunConfig(
            image=image_id, command=["cat", "/made.txt"], name=scratch.name("probe"), labels=scratch.labels
        )
    )
    lines = Lines()
    await engine.logs(probe, lines.run)
    assert (await engine.wait(probe)).code == 0 and lines.text(1) == "made\n"
