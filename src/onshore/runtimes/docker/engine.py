"""The Docker engine layer: every Docker API call Onshore makes, typed and async over the Docker SDK."""

from __future__ import annotations

import asyncio
import codecs
import collections
import io
import posixpath
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, Mount
from docker.utils import kwargs_from_env

from onshore.runtimes.docker.specs import (
    ContainerState,
    ContextFile,
    ExecResult,
    ExitStatus,
    ImageConfig,
    RunConfig,
)

T = TypeVar("T")

DEFAULT_URL = "unix:///var/run/docker.sock"
# The Dockerfile and the ignore file travel in the build context under names no user file may take.
DOCKERFILE_NAME = ".onshore.Dockerfile"
RESERVED_CONTEXT_PATHS = frozenset({DOCKERFILE_NAME, ".dockerignore"})
BUILD_OUTPUT_TAIL_LINES = 40
_STEP_RE = re.compile(r"^Step \d+/\d+ : (.*)$")
# The legacy builder wraps a step's stderr in these (bright red, reset); the lines are plain without them.
_STDERR_MARKS = re.compile(r"\x1b\[91m|\x1b\[0m")
# Lines of the builder's own bookkeeping, which are no output of the step.
_BUILDER_LINES = (" ---> ", "Removing intermediate container ")


class DockerError(Exception):
    """A Docker call failed; the message says which call and why."""


class NotFoundError(DockerError):
    """The container or image named does not exist."""


class BuildError(DockerError):
    """An image build failed; `step` is the failing Dockerfile instruction, `output_tail` its last output."""

    def __init__(self, message: str, step: str, output_tail: str) -> None:
        super().__init__(message)
        self.step = step
        self.output_tail = output_tail


class DockerEngine:
    """An async client of one Docker engine. Blocking SDK calls run in worker threads.

    Short calls share a small pool; calls that block for a container's lifetime (logs, wait, exec, build,
    stop) get threads of their own, so many running containers never starve the short calls. Callbacks
    (`on_log`) always run on the event loop of the caller, in the order the engine sent the output.
    """

    def __init__(self, base_url: str | None = None, *, timeout: float = 60.0) -> None:
        """base_url: e.g. "unix:///run/docker.sock"; None: DOCKER_HOST (and DOCKER_TLS_*) or the default."""
        if base_url is None:
            self._kwargs: dict[str, Any] = dict(kwargs_from_env())
        else:
            self._kwargs = {"base_url": base_url}
        self.url: str = str(self._kwargs.get("base_url") or DEFAULT_URL)
        self._timeout = timeout
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        self._short = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker-call")
        self._long = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="docker-stream")

    async def close(self) -> None:
        """Drop the connection pool and the worker threads; calls in flight finish on their own."""
        self._short.shutdown(wait=False, cancel_futures=True)
        self._long.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    # -- plumbing --------------------------------------------------------------------------------------

    def _api(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = docker.APIClient(
                        **self._kwargs, version="auto", timeout=int(self._timeout), max_pool_size=512
                    )
                except docker.errors.DockerException as e:
                    raise DockerError(f"engine unreachable at {self.url}: {_why(e)}") from e
            return self._client

    def _error(self, what: str, e: Exception) -> DockerError:
        if isinstance(e, DockerError):
            return e
        if isinstance(e, docker.errors.NotFound):
            return NotFoundError(f"{what}: {e.explanation or e}")
        if isinstance(e, docker.errors.APIError):
            return DockerError(f"{what}: {e.explanation or e}")
        if isinstance(e, requests.exceptions.Timeout) or "timed out" in str(e):
            return DockerError(f"{what}: the engine at {self.url} did not answer in time ({_why(e)})")
        if isinstance(e, requests.exceptions.ConnectionError):
            return DockerError(f"engine unreachable at {self.url}: {_why(e)}")
        return DockerError(f"{what}: {type(e).__name__}: {e}")

    async def _call(self, what: str, fn: Callable[[docker.APIClient], T], *, long: bool = False) -> T:
        def work() -> T:
            try:
                return fn(self._api())
            except Exception as e:
                raise self._error(what, e) from e

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._long if long else self._short, work)

    # -- engine and images -----------------------------------------------------------------------------

    async def ping(self) -> str:
        """The engine's version, e.g. "20.10.24+dfsg1"; DockerError when the engine does not answer."""
        version = await self._call("ping", lambda api: api.version())
        return str(version.get("Version", "unknown"))

    async def resources(self) -> tuple[int, int]:
        """The engine's machine: (CPUs, memory in MiB); DockerError when the engine does not answer."""
        info = await self._call("info", lambda api: api.info())
        return int(info.get("NCPU", 0) or 0), int(info.get("MemTotal", 0) or 0) // (1024 * 1024)

    async def build(
        self,
        dockerfile: str,
        context: Mapping[str, bytes | ContextFile],
        tag: str | None,
        on_log: Callable[[str], None],
        *,
        build_args: Mapping[str, str] | None = None,
        no_cache: bool = False,
        network_host: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Build `dockerfile` over an in-memory context (relative path -> content); returns the image id,
        tagged `tag` (None: untagged).

        Each output line goes to on_log (newline included) as the engine sends it. Base images are used
        from the engine's store when there (`FROM <tag of an earlier build>` never pulls). A failing step
        raises BuildError naming the instruction and the tail of its output. With network_host the build
        steps share the host's network (no bridge network is needed for `pip install`).
        """
        archive = _context_tar(dockerfile, context)
        loop = asyncio.get_running_loop()
        emit = _LoopEmitter(loop, on_log)

        def work(api: docker.APIClient) -> str:
            stream = api.build(
                fileobj=archive,
                custom_context=True,
                dockerfile=DOCKERFILE_NAME,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=no_cache,
                buildargs=dict(build_args or {}),
                network_mode="host" if network_host else None,
                labels=dict(labels or {}),
                decode=True,
            )
            return _follow_build(tag or "(untagged)", stream, emit)

        image_id = await self._call(f"build {tag or 'an untagged image'}", work, long=True)
        if not image_id and tag is None:
            raise DockerError("the engine built an image without saying its id")
        return image_id or (await self.image_config(str(tag))).id

    async def commit(self, cid: str, *, config_of: str, message: str = "") -> str:
        """Commit the container (paused meanwhile) as an untagged image with the config of image `config_of`;
        its id. What that config leaves empty (an Env key, a Cmd without Entrypoint...) the engine takes from
        the container's: give a container to commit its image's env, and no workdir, stop signal or Cmd."""

        def work(api: docker.APIClient) -> str:
            conf = dict(api.inspect_image(config_of).get("Config") or {})  # type: ignore[no-untyped-call]
            if conf.get("Entrypoint") is None:
                conf["Entrypoint"] = []  # "none", which the engine keeps: null would take the container's
            return str(api.commit(cid, message=message or None, conf=conf)["Id"])

        return await self._call(f"commit container {cid}", work, long=True)

    async def diff(self, cid: str) -> list[tuple[str, int]]:
        """The container's changes to its image's files: (path, kind); kind 0 changed, 1 added, 2 deleted."""
        found = await self._call(f"diff of container {cid}", lambda api: api.diff(cid))
        return [(str(change["Path"]), int(change["Kind"])) for change in found or []]

    async def image_config(self, ref: str) -> ImageConfig:
        info = await self._call(f"inspect image {ref}", lambda api: api.inspect_image(ref))  # type: ignore[no-untyped-call]
        config = info.get("Config") or {}
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in config.get("Env") or [])
        return ImageConfig(
            id=str(info["Id"]),
            env=env,
            workdir=str(config.get("WorkingDir") or ""),
            cmd=list(config["Cmd"]) if config.get("Cmd") is not None else None,
            entrypoint=list(config["Entrypoint"]) if config.get("Entrypoint") is not None else None,
            user=str(config.get("User") or ""),
            shell=list(config["Shell"]) if config.get("Shell") else None,
        )

    async def has_image(self, ref: str) -> bool:
        try:
            await self._call(f"inspect image {ref}", lambda api: api.inspect_image(ref))  # type: ignore[no-untyped-call]
        except NotFoundError:
            return False
        return True

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Untag/remove an image; a missing one is no error."""
        try:
            await self._call(f"remove image {ref}", lambda api: api.remove_image(ref, force=force))
        except NotFoundError:
            pass

    # -- containers ------------------------------------------------------------------------------------

    async def run(self, config: RunConfig) -> str:
        """Create and start a container; returns its id. One that fails to start is removed again."""

        def work(api: docker.APIClient) -> str:
            host_config = api.create_host_config(
                mounts=[Mount(target=c, source=h, type="bind", read_only=ro) for h, c, ro in config.binds],
                mem_limit=config.memory_limit_bytes,
                memswap_limit=config.memory_limit_bytes,
                nano_cpus=config.nano_cpus,
                init=config.init,
                network_mode=config.network,
                shm_size=config.shm_size_bytes,
                device_requests=[
                    DeviceRequest(driver="nvidia", device_ids=config.gpu_ids, capabilities=[["gpu"]])
                ]
                if config.gpu_ids
                else None,
            )
            entrypoint: list[str] | None = config.entrypoint
            if entrypoint is not None and not entrypoint:
                entrypoint = [""]  # the engine's way of saying "no entrypoint"
            created = api.create_container(
                config.image,
                command=config.command,
                environment=dict(config.env),
                working_dir=config.workdir,
                labels=dict(config.labels),
                name=config.name,
                host_config=host_config,
                entrypoint=entrypoint,
                stop_signal=config.stop_signal or None,
                stdin_open=config.stdin_open,
                detach=True,
            )
            cid = str(created["Id"])
            try:
                if config.files is not None:
                    with config.files.open("rb") as archive:
                        api.put_archive(cid, "/", archive)
                api.start(cid)
            except BaseException:
                try:
                    api.remove_container(cid, force=True)
                except docker.errors.APIError:
                    pass
                raise
            return cid

        return await self._call(f"run container {config.name} ({config.image})", work)

    async def logs(self, cid: str, on_log: Callable[[int, str], None]) -> None:
        """Deliver the container's output so far and then as it comes, as on_log(fd, text) with fd 1 or 2,
        until the container exits (at once if it has). Each fd's text keeps its order; the two fds are
        followed separately (the engine's attach call, which interleaves them, hangs on an exited
        container). Cancelling closes the streams."""
        loop = asyncio.get_running_loop()
        emit = _LoopEmitter(loop, lambda item: on_log(item[0], item[1]))
        lock = threading.Lock()
        streams: list[Any] = []
        cancelled = False

        def follow(api: docker.APIClient, fd: int) -> None:
            stream = api.logs(cid, stdout=fd == 1, stderr=fd == 2, stream=True, follow=True)
            with lock:
                streams.append(stream)
                if cancelled:
                    stream.close()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            try:
                for data in stream:
                    text = decoder.decode(data)
                    if text:
                        emit((fd, text))
                rest = decoder.decode(b"", final=True)
                if rest:
                    emit((fd, rest))
            finally:
                stream.close()

        calls = [self._call(f"logs of container {cid}", partial(follow, fd=fd), long=True) for fd in (1, 2)]
        try:
            await asyncio.gather(*calls)
        except asyncio.CancelledError:
            with lock:
                cancelled = True
                for stream in streams:
                    stream.close()
            raise

    async def wait(self, cid: str) -> ExitStatus:
        """Wait until the container exits; its exit code and whether it was OOM-killed."""

        def work(api: docker.APIClient) -> ExitStatus:
            result = api.wait(cid, timeout=None)
            state = api.inspect_container(cid)["State"]
            return ExitStatus(int(result["StatusCode"]), bool(state.get("OOMKilled")))

        return await self._call(f"wait for container {cid}", work, long=True)

    async def stop(self, cid: str, grace: float) -> None:
        """SIGINT (the modal entrypoint runs its exit hooks on it), then SIGKILL if still running after
        `grace` seconds. Returns once the container has stopped; a stopped or missing one is no error."""

        def work(api: docker.APIClient) -> None:
            try:
                api.kill(cid, signal="SIGINT")
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as e:
                if e.status_code == 409:  # not running
                    return
                raise
            try:
                api.wait(cid, timeout=max(grace, 0.001))  # type: ignore[arg-type]  # the SDK takes floats
                return
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
                pass  # a read timeout (urllib3 reports it as either); an unreachable engine fails below
            try:
                api.kill(cid, signal="SIGKILL")
            except docker.errors.APIError as e:
                if e.status_code not in (404, 409):
                    raise
                return
            api.wait(cid, timeout=None)

        await self._call(f"stop container {cid}", work, long=True)

    async def remove(self, cid: str) -> None:
        """Remove the container (killing it if it runs) and its anonymous volumes; a missing one is fine."""

        def work(api: docker.APIClient) -> None:
            try:
                api.remove_container(cid, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if e.status_code != 409 or "already in progress" not in str(e.explanation):
                    raise

        await self._call(f"remove container {cid}", work)

    async def exec(
        self,
        cid: str,
        argv: list[str],
        *,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: Callable[[str], None] | None = None,
    ) -> ExecResult:
        """Run argv (with `env`, which no config holds) in the running container; its exit code and output,
        which goes to on_output as it comes instead, decoded, where that is given."""
        emit = _LoopEmitter(asyncio.get_running_loop(), on_output) if on_output is not None else None

        def work(api: docker.APIClient) -> ExecResult:
            created = api.exec_create(
                cid, argv, stdout=True, stderr=True, workdir=workdir, environment=dict(env or {})
            )
            if emit is None:
                output = api.exec_start(created["Id"])
            else:
                output, decoder = b"", codecs.getincrementaldecoder("utf-8")(errors="replace")
                for data in api.exec_start(created["Id"], stream=True):
                    if text := decoder.decode(data):
                        emit(text)
                if rest := decoder.decode(b"", final=True):
                    emit(rest)
            for _ in range(100):  # its output can end a moment before the engine records its exit
                info = api.exec_inspect(created["Id"])
                if not info.get("Running"):
                    break
                time.sleep(0.05)
            code = info.get("ExitCode")
            return ExecResult(int(code if code is not None else -1), bytes(output))

        return await self._call(f"exec {argv[:1]} in container {cid}", work, long=True)

    async def inspect(self, cid: str) -> ContainerState:
        info = await self._call(f"inspect container {cid}", lambda api: api.inspect_container(cid))
        state = info.get("State") or {}
        return ContainerState(
            id=str(info["Id"]),
            name=str(info.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            labels=dict((info.get("Config") or {}).get("Labels") or {}),
            pid=int(state.get("Pid") or 0),
        )

    async def list_containers(self, labels: Mapping[str, str], *, running_only: bool = False) -> list[str]:
        """Ids of the containers carrying all these labels (stopped ones too unless running_only)."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = await self._call(
            "list containers", lambda api: api.containers(all=not running_only, filters=filters)
        )
        return [str(c["Id"]) for c in found]


class _LoopEmitter:
    """Hands items from a worker thread to a callback on the event loop, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None]) -> None:
        self._loop = loop
        self._callback = callback

    def __call__(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._callback, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            pass


def _context_tar(dockerfile: str, context: Mapping[str, bytes | ContextFile]) -> io.BytesIO:
    """The build context as an uncompressed tar, with the Dockerfile and an ignore file hiding it."""
    entries: dict[str, ContextFile] = {}
    for raw, content in context.items():
        path = posixpath.normpath(raw.lstrip("/"))
        if path in ("", ".") or path.startswith("../") or path == "..":
            raise DockerError(f"build context path {raw!r} is not a relative path inside the context")
        if path in RESERVED_CONTEXT_PATHS:
            raise DockerError(f"build context path {raw!r} is reserved by Onshore's image builder")
        entries[path] = content if isinstance(content, ContextFile) else ContextFile(content)
    entries[DOCKERFILE_NAME] = ContextFile(dockerfile.encode())
    entries[".dockerignore"] = ContextFile(f"{DOCKERFILE_NAME}\n.dockerignore\n".encode())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for path in sorted(entries):
            for parent in _parents(path):
                if parent not in made:
                    made.add(parent)
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            entry = entries[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(entry.data), entry.mode
            tar.addfile(info, io.BytesIO(entry.data))
    buf.seek(0)
    return buf


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def _follow_build(tag: str, stream: Iterable[dict[str, Any]], emit: Callable[[str], None]) -> str:
    """Consume the legacy builder's JSON stream: emit lines, track the current step, return the image id."""
    step = ""
    tail: collections.deque[str] = collections.deque(maxlen=BUILD_OUTPUT_TAIL_LINES)
    image_id = ""
    pending = ""
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            if pending:
                emit(pending + "\n")
                tail.append(pending)
            detail = chunk.get("errorDetail") or {}
            message = str(detail.get("message") or chunk.get("error") or "unknown error").strip()
            tail_text = "\n".join(tail)
            where = f" at `{step}`" if step else ""
            raise BuildError(
                f"image build {tag} failed{where}: {message}"
                + (f"\n--- last output of the step ---\n{tail_text}" if tail_text else ""),
                step,
                tail_text,
            )
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
        text = chunk.get("stream")
        if text is None and chunk.get("status"):  # pull progress of a base image
            text = f"{chunk['status']} {chunk.get('progress', '')}".rstrip() + "\n"
        if not text:
            continue
        pending += _STDERR_MARKS.sub("", str(text))
        *lines, pending = pending.split("\n")
        for line in lines:
            emit(line + "\n")
            match = _STEP_RE.match(line)
            if match:
                step = match.group(1)
                tail.clear()
            elif not line.startswith(_BUILDER_LINES):
                tail.append(line)
    if pending:
        emit(pending + "\n")
    return image_id


def _why(e: BaseException) -> str:
    """The innermost OS-level cause of a connection failure, or the error itself."""
    seen: set[int] = set()
    todo: list[BaseException] = [e]
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return f"{cur.strerror} ({type(cur).__name__})"
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
        todo.extend(x for x in (cur.__cause__, cur.__context__) if x is not None)
    return str(e) or type(e).__name__


__all__ = [
    "BuildError",
    "ContainerState",
    "ContextFile",
    "DockerEngine",
    "DockerError",
    "ExecResult",
    "ExitStatus",
    "ImageConfig",
    "NotFoundError",
    "RunConfig",
]
