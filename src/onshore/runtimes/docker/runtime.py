"""The docker runtime: each container is a Docker container of the function's image, running the client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onshore.config import DEFAULT_DOCKER_NETWORK
from onshore.errors import Conflict, NotFound
from onshore.events import ExitSink, LogSink
from onshore.images.model import BuildFailed
from onshore.images.pythons import ClientPackages, PythonFinder, linux_platform
from onshore.models import ImageConfig
from onshore.runtimes.base import (
    ARGS_TARGET,
    PKG_TARGET,
    Capabilities,
    ContainerSpec,
    ExecProcess,
    ExecSpec,
)
from onshore.runtimes.docker.commit import CommitBuild, Committed, placeholders
from onshore.runtimes.docker.engine import (
    DockerEngine,
    DockerError,
    ExitStatus,
    NotFoundError,
    RunConfig,
)
from onshore.runtimes.docker.exec import start_docker_exec
from onshore.runtimes.pyenv import installed_client_version

log = logging.getLogger("onshore.runtime.docker")

LABEL_RUNTIME = "org.onshore.runtime"
LABEL_SERVER = "org.onshore.server"  # which server (data dir) made the container
LABEL_TASK = "org.onshore.task"
LABEL_APP = "org.onshore.app"
LABEL_FUNCTION = "org.onshore.function"
# Where a container finds the directory of the server's unix socket (bound, not the socket file: a file bind
# would go stale when the server recreates its socket).
SOCKET_DIR_TARGET = "/onshore/server"
ENTRYPOINT_COMMAND = ["python", "-m", "modal._container_entrypoint"]
# An Image.run_function container is committed as an image layer, config included: its environment and working
# dir reach its process through a file (bound here) that this loader reads before it becomes the command.
BUILD_ENV_TARGET = "/onshore/build-environment"
_ENV_LOADER = (
    "import json, os, sys; spec = json.load(open(sys.argv[1])); os.environ.update(spec['env']); "
    "os.makedirs(spec['cwd'], exist_ok=True); os.chdir(spec['cwd']); os.execvp(sys.argv[2], sys.argv[2:])"
)
# Large payloads travel as blobs, over the server's HTTP port on the host's loopback, which a container on its
# own network cannot reach. Such a container gets a forwarder on its own loopback, at the same port, to the
# server's blob socket (in the bound socket directory): the blob URLs work unchanged.
_FORWARDER = """
import socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, port))
listener.listen(64)
def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(client):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"""
# Starts the forwarder (its arguments: host, port, socket path), then becomes the client's entrypoint.
_WITH_FORWARDER = (
    "import os, subprocess, sys; d = subprocess.DEVNULL; "
    "subprocess.Popen([sys.executable, '-c'] + sys.argv[1:], stdin=d, stdout=d, stderr=d); "
    "os.execv(sys.executable, [sys.executable, '-m', 'modal._container_entrypoint'])"
)
_LOG_DRAIN_SECONDS = 5.0
_SHUTDOWN_GRACE = 2.0


class EngineUnavailable(Exception):
    """The Docker engine does not answer: the docker runtime cannot run containers."""


def _archive(paths: list[Path], dest: Path) -> None:
    """A tar archive of these paths, each under its own name at the archive's top."""
    with tarfile.open(dest, "w") as tar:
        for path in paths:
            tar.add(path, arcname=path.name)


def server_labels(data_dir: Path) -> dict[str, str]:
    """The labels that mark the containers of the server with this data dir."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return {LABEL_RUNTIME: "docker", LABEL_SERVER: key}


def exit_code(status: ExitStatus) -> int:
    """The process runtime's convention: the exit code, or minus the signal that ended the container (Docker
    reports 128+N for signal N; an OOM kill is SIGKILL)."""
    if status.oom_killed:
        return -int(signal.SIGKILL)
    if 128 < status.code <= 128 + 64:
        return -(status.code - 128)
    return status.code


def _remove_build_files(env_file: Path) -> None:
    """The environment file of a build container, and its bytecode dir."""
    env_file.unlink(missing_ok=True)
    shutil.rmtree(env_file.with_suffix(".pycache"), ignore_errors=True)


@dataclass
class _Container:
    task_id: str
    cid: str
    workdir: str
    args_path: Path
    memory_limit_mb: int = 0
    image: str = ""  # the engine's image id
    build_env: Path | None = None  # an Image.run_function container's environment file
    targets: list[str] = field(default_factory=list)  # where its binds are
    follower: asyncio.Task[None] | None = None
    waiter: asyncio.Task[None] | None = None


class DockerRuntime:
    """Containers on a Docker engine. Images come from DockerBuilder (ImageConfig.ref is the image id)."""

    name = "docker"

    def __init__(
        self,
        engine: DockerEngine,
        state_dir: Path,
        max_containers: int,
        *,
        network: str = DEFAULT_DOCKER_NETWORK,
        labels: Mapping[str, str] | None = None,
        blobs: tuple[str, str] | None = None,
        packages: ClientPackages | None = None,
        pythons: PythonFinder | None = None,
    ) -> None:
        """state_dir: the runtime's own files (argument files, client packages), shown to containers only
        through read-only binds. labels: put on every container, to find this server's leftovers.
        blobs: (the server's blob URL, e.g. http://127.0.0.1:8001; the name of the unix socket next to the
        server's API socket that serves the same), for containers on a network other than the host's."""
        self.capabilities = Capabilities(
            gpus=True,  # real GPUs through device requests (NVIDIA's container toolkit), emulated ones by env
            registry_images=True,
            memory_limits=True,
            limits_reason="",
            blob_socket=blobs is not None,
            max_containers=max_containers,
            # Volumes are overlays the server mounts on this host for the engine to bind: root's to do, with
            # the engine on this machine.
            volumes=os.geteuid() == 0,
        )
        self._engine = engine
        self._state_dir = state_dir
        self._args_dir = state_dir / "args"
        self._args_dir.mkdir(parents=True, exist_ok=True)
        # Environments of build containers (secrets included): for the server's user only.
        self._build_env_dir = state_dir / "build-env"
        self._build_env_dir.mkdir(exist_ok=True)
        os.chmod(self._build_env_dir, 0o700)
        self._packages = packages or ClientPackages(state_dir / "client-packages", linux_platform())
        self._pythons = pythons or PythonFinder()
        self._network = network
        self._blobs = blobs
        self._labels = dict(labels or {})
        self._containers: dict[str, _Container] = {}
        self._starting: set[asyncio.Future[str]] = set()
        self._orphans: set[asyncio.Future[None]] = set()
        self._closed = False
        self._on_log: LogSink = lambda t, fd, s: None
        self._on_exit: ExitSink = lambda t, rc, detail: None

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None:
        self._on_log, self._on_exit = on_log, on_exit

    def warm_up(self) -> None:
        """Nothing to prepare ahead: containers start from their images."""

    async def prepare(self) -> None:
        """Check the engine answers, and remove the containers a previous run of this server left behind
        (after a crash). EngineUnavailable with the reason when the engine does not answer."""
        try:
            version = await self._engine.ping()
            leftovers = await self._engine.list_containers(self._labels) if self._labels else []
            for cid in leftovers:
                await self._engine.remove(cid)
        except DockerError as exc:
            raise EngineUnavailable(
                f"The docker runtime cannot reach the Docker engine at {self._engine.url}: {exc}. "
                "Start Docker, or point --docker-host at a running engine."
            ) from None
        if leftovers:
            log.info("removed %d containers left behind by an earlier run of this server", len(leftovers))
        log.info("docker runtime on the engine at %s (Docker %s)", self._engine.url, version)

    # ---------------------------------------------------------------- containers
    def _image(self, spec: ContainerSpec) -> ImageConfig:
        image = spec.image
        if image is None:
            raise Conflict(
                "The docker runtime runs functions on built images, and this function has none: "
                "deploy it again with a current modal client"
            )
        if not image.ref:
            raise Conflict(
                "This function's image was not built by the docker runtime (it has no Docker image): "
                "run or deploy the app again on this server to build it"
            )
        if not image.python_version:
            raise Conflict(
                "This function's image has no Python interpreter (no `python` on its PATH): Modal "
                "containers run `python -m modal._container_entrypoint`. Use an image with Python, e.g. "
                "Image.debian_slim() or Image.from_registry(..., add_python=...)"
            )
        return image

    async def _client_folder(self, client_version: str, python_version: str) -> str:
        """The client package folder for the image's Python: built on a host interpreter of its minor
        version where there is one, else for that version without one."""
        minor = ".".join(python_version.split(".")[:2])
        try:
            python, _ = await asyncio.to_thread(self._pythons.find, minor)
        except BuildFailed:
            python = ""
        try:
            return await self._packages.folder(client_version, python, python_version)
        except BuildFailed as exc:
            raise Conflict(str(exc)) from None

    def _server_binds(self, env: dict[str, str]) -> list[tuple[str, str, bool]]:
        """The server's socket directory, and the URL that reaches it from inside the container."""
        url = env.get("MODAL_SERVER_URL", "")
        if url.startswith("unix://"):
            socket = Path(url[len("unix://") :])
            env["MODAL_SERVER_URL"] = f"unix://{SOCKET_DIR_TARGET}/{socket.name}"
            return [(str(socket.parent), SOCKET_DIR_TARGET, True)]
        if self._network != "host":
            raise Conflict(
                f"Containers on the Docker network {self._network!r} cannot reach the server at {url}: "
                "its unix socket path is too long (keep the data dir's path under about 80 characters), "
                "or run the server with --docker-network host"
            )
        return []

    def _command(self, env: dict[str, str]) -> list[str]:
        """The entrypoint command; with a blob forwarder where the server's blob port is out of reach."""
        if self._blobs is None or self._network == "host":
            return ENTRYPOINT_COMMAND
        url, socket_name = self._blobs
        host, _, port = url.removeprefix("http://").partition("/")[0].rpartition(":")
        through_socket = env.get("MODAL_SERVER_URL", "").startswith("unix://")
        if host not in ("127.0.0.1", "localhost") or not through_socket:
            return ENTRYPOINT_COMMAND
        path = f"{SOCKET_DIR_TARGET}/{socket_name}"
        return ["python", "-c", _WITH_FORWARDER, _FORWARDER, "127.0.0.1", port, path]

    async def start(self, spec: ContainerSpec) -> int:
        if self._closed:
            raise Conflict("The server is stopping: no new containers")
        if spec.image_build is not None and not isinstance(spec.image_build, CommitBuild):
            raise Conflict("The docker runtime builds Image.run_function layers by committing the container")
        image = self._image(spec)
        version = spec.client_version or installed_client_version()
        pkg = await self._client_folder(version, image.python_version)
        args_path = self._args_dir / spec.task_id
        args_path.write_bytes(spec.container_args)
        env = dict(spec.env)
        binds = [(pkg, PKG_TARGET, True), (str(args_path), ARGS_TARGET, True), *self._server_binds(env)]
        binds += [(v.source, v.target, v.read_only) for v in spec.volumes]
        # The code dir stands for /root: each of its entries is bound there, so what the image itself has
        # under /root stays visible.
        code_dir = Path(spec.code_dir)
        for name in sorted(os.listdir(code_dir)) if code_dir.is_dir() else []:
            binds.append((str(code_dir / name), f"/root/{name}", True))
        # Files mounted elsewhere (add_local_dir(..., remote_path="/data")) are copied in before the container
        # starts: a bind would hide what the image has in the same directories.
        tree = code_dir.parent
        outside = [tree / n for n in sorted(os.listdir(tree)) if n != "root"] if tree.is_dir() else []
        files = self._args_dir / f"{spec.task_id}.tar" if outside else None
        if files is not None:
            await asyncio.to_thread(_archive, outside, files)
        workdir = image.workdir or "/root"
        python_path = [PKG_TARGET]
        if workdir != "/root":
            python_path.append("/root")  # the user's code stays importable from another workdir
        if image.env.get("PYTHONPATH"):
            python_path.append(image.env["PYTHONPATH"])
        env.update(
            {
                "MODAL_IS_REMOTE": "1",
                "PYTHONUNBUFFERED": "1",
                "MODAL_CONFIG_PATH": "/nonexistent.toml",
                "MODAL_CONTAINER_ARGUMENTS_PATH": ARGS_TARGET,
                "MODAL_TASK_ID": spec.task_id,
                "PYTHONPATH": ":".join(python_path),
            }
        )
        config = RunConfig(
            image=image.ref,
            command=self._command(env),
            name=f"onshore-{spec.task_id}",
            env=env,
            workdir=workdir,
            binds=binds,
            labels={
                **self._labels,
                LABEL_TASK: spec.task_id,
                LABEL_APP: spec.app_id,
                LABEL_FUNCTION: spec.function_id,
            },
            network=self._network,
            init=True,  # docker's init as PID 1: passes SIGINT on, reaps what the function leaves
            memory_limit_bytes=spec.memory_limit_mb * 1024 * 1024 if spec.memory_limit_mb else None,
            nano_cpus=int(spec.cpu_limit * 1e9) if spec.cpu_limit else None,
            gpu_ids=[g.uuid or str(g.index) for g in spec.gpus if not g.emulated],
            files=files,
        )
        build_env = self._as_build_container(config, spec.task_id) if spec.image_build is not None else None
        try:
            cid = await self._run(config)
        except BaseException:
            args_path.unlink(missing_ok=True)
            if build_env is not None:
                _remove_build_files(build_env)
            raise
        finally:
            if files is not None:
                files.unlink(missing_ok=True)
        targets = [target for _, target, _ in config.binds]
        entry = _Container(
            spec.task_id, cid, workdir, args_path, spec.memory_limit_mb, image.ref, build_env, targets
        )
        self._containers[spec.task_id] = entry
        entry.follower = asyncio.create_task(self._follow(entry))
        entry.waiter = asyncio.create_task(self._wait(entry))
        try:
            pid = (await self._engine.inspect(cid)).pid
        except DockerError:
            pid = 0
        return pid or 1  # an id to show (its main process on the engine's host); 1 once it has ended

    def _as_build_container(self, config: RunConfig, task_id: str) -> Path:
        """Make `config` one whose commit keeps its image's config: the environment and working dir go to a
        file its loader reads, the command into the entrypoint; no init (its binary would be committed). The
        bytecode of the code bound at /root goes to a dir of the host (a commit would keep what it holds)."""
        path = self._build_env_dir / f"{task_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # its user may be the image's
        with os.fdopen(fd, "w") as f:
            json.dump({"env": config.env, "cwd": config.workdir or "/root"}, f)
        config.binds.append((str(path), BUILD_ENV_TARGET, True))
        if all(target != "/root/__pycache__" for _, target, _ in config.binds):
            path.with_suffix(".pycache").mkdir(exist_ok=True)
            config.binds.append((str(path.with_suffix(".pycache")), "/root/__pycache__", False))
        config.entrypoint = ["python", "-c", _ENV_LOADER, BUILD_ENV_TARGET, *config.command]
        config.command, config.env, config.workdir = [], {}, None
        config.init, config.stop_signal = False, ""
        return path

    async def commit(self, task_id: str, message: str) -> Committed:
        """Image.run_function: commit the running build container as an image with its image's config, and say
        which empty mount points of its binds the image holds. BuildFailed says why it could not."""
        entry = self._containers.get(task_id)
        if entry is None or entry.build_env is None:
            raise BuildFailed(f"Image.run_function: its container {task_id} is not running any more")
        try:
            changes = await self._engine.diff(entry.cid)
            image_id = await self._engine.commit(entry.cid, config_of=entry.image, message=message)
        except DockerError as exc:
            raise BuildFailed(
                f"Image.run_function: could not commit its container {task_id}: {exc}"
            ) from None
        return Committed(image_id, placeholders(changes, entry.targets))

    async def _run(self, config: RunConfig) -> str:
        """Create and start the container; shutdown() waits for runs in flight, so none outlives it."""
        task = asyncio.ensure_future(self._engine.run(config))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        try:
            cid = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._remove_orphan)  # nobody will follow what it starts
            raise
        except NotFoundError as exc:
            raise Conflict(
                f"The image {config.image} is not in the Docker engine at {self._engine.url} any more "
                f"({exc}): build it again (MODAL_FORCE_BUILD=1)"
            ) from None
        except DockerError as exc:
            raise Conflict(f"Docker could not start the container: {exc}") from None
        if self._closed:
            with contextlib.suppress(DockerError):
                await self._engine.remove(cid)
            raise Conflict("The server is stopping: no new containers")
        return cid

    def _remove_orphan(self, run: asyncio.Future[str]) -> None:
        if not run.cancelled() and run.exception() is None:
            cid = run.result()
            removal = asyncio.ensure_future(self._engine.remove(cid))
            self._orphans.add(removal)
            removal.add_done_callback(self._orphans.discard)

    async def _follow(self, entry: _Container) -> None:
        try:
            await self._engine.logs(entry.cid, lambda fd, text: self._on_log(entry.task_id, fd, text))
        except DockerError as exc:
            log.warning("lost the output of container %s: %s", entry.task_id, exc)

    async def _wait(self, entry: _Container) -> None:
        detail = ""
        try:
            status = await self._engine.wait(entry.cid)
            rc = exit_code(status)
            if status.oom_killed:
                limit = f"its limit is {entry.memory_limit_mb} MiB" if entry.memory_limit_mb else "its limit"
                detail = f"ran out of memory ({limit}) and was killed"
        except DockerError as exc:
            log.warning("lost track of container %s: %s", entry.task_id, exc)
            rc = -int(signal.SIGKILL)
        if entry.follower is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(entry.follower), _LOG_DRAIN_SECONDS)
            entry.follower.cancel()
        try:
            await self._engine.remove(entry.cid)
        except DockerError as exc:
            log.warning("could not remove container %s (%s): %s", entry.task_id, entry.cid[:12], exc)
        self._containers.pop(entry.task_id, None)
        entry.args_path.unlink(missing_ok=True)
        if entry.build_env is not None:
            _remove_build_files(entry.build_env)
        self._on_exit(entry.task_id, rc, detail)

    async def stop(self, task_id: str, grace: float) -> None:
        entry = self._containers.get(task_id)
        if entry is None:
            return
        try:
            # SIGINT lets the entrypoint run @modal.exit hooks; SIGKILL after the grace period.
            await self._engine.stop(entry.cid, grace)
        except DockerError as exc:
            log.warning("could not stop container %s: %s", task_id, exc)
            with contextlib.suppress(DockerError):
                await self._engine.remove(entry.cid)
        if entry.waiter is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(entry.waiter)

    async def exec(self, task_id: str, spec: ExecSpec) -> ExecProcess:
        entry = self._containers.get(task_id)
        if entry is None or (entry.waiter is not None and entry.waiter.done()):
            raise NotFound(f"Container {task_id} is not running")
        return await start_docker_exec(self._engine, entry.cid, entry.workdir, spec, self._state_dir)

    def running(self) -> list[str]:
        return list(self._containers)

    async def namespace_pid(self, task_id: str) -> int | None:
        entry = self._containers.get(task_id)
        if entry is None:
            return None
        try:
            state = await self._engine.inspect(entry.cid)
        except DockerError:
            return None
        return state.pid if state.running and state.pid else None

    async def shutdown(self) -> None:
        """Stop every container (SIGINT, then SIGKILL after a short grace) and remove it."""
        self._closed = True
        if self._starting:
            await asyncio.gather(*list(self._starting), return_exceptions=True)
        await asyncio.gather(
            *(self.stop(task_id, _SHUTDOWN_GRACE) for task_id in list(self._containers)),
            return_exceptions=True,
        )
        await asyncio.gather(*list(self._orphans), return_exceptions=True)
        if not self._labels:
            return
        try:  # anything of this server still there (a container whose start raced the shutdown)
            for cid in await self._engine.list_containers(self._labels):
                await self._engine.remove(cid)
        except DockerError as exc:
            log.warning("could not check for containers left behind: %s", exc)
