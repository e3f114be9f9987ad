"""The composition root: stores -> services -> handlers -> gRPC and HTTP servers, plus the loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from modal_proto.task_command_router_grpc import TaskCommandRouterBase

from onshore.api.apps import AppHandlers
from onshore.api.base import Authenticator, Router
from onshore.api.blobs import BlobHandlers
from onshore.api.calls import CallHandlers
from onshore.api.command_router import ROUTER_FEATURES, CommandRouterHandlers, RouterAuthenticator
from onshore.api.containers import ContainerHandlers
from onshore.api.environments import EnvironmentHandlers
from onshore.api.functions import FunctionHandlers
from onshore.api.images import ImageHandlers
from onshore.api.logs import LogHandlers
from onshore.api.mounts import MountHandlers
from onshore.api.secrets import SecretHandlers
from onshore.api.tasks import TaskHandlers
from onshore.api.transport import CoalescingServer as GrpcServer
from onshore.background import Background
from onshore.config import RUNTIMES, DataDir, ServerConfig
from onshore.http.blobs import blob_app
from onshore.images.docker_builder import DockerBuilder
from onshore.images.model import Builder
from onshore.images.process_builder import ProcessBuilder
from onshore.images.pythons import PythonFinder
from onshore.loops.autoscaler import Autoscaler
from onshore.loops.hostcpu import ScaleOutGate, read_cpu_times, usable_cores
from onshore.loops.janitor import Janitor
from onshore.models import App
from onshore.protocol.build_runner import BuildFunctionRunner
from onshore.protocol.launch import Launcher
from onshore.protocol.results import make_result
from onshore.runtimes import sandbox
from onshore.runtimes.base import Runtime
from onshore.runtimes.cgroups import CgroupError, Cgroups
from onshore.runtimes.docker import DockerRuntime, server_labels
from onshore.runtimes.docker_engine import DockerEngine
from onshore.runtimes.process import ProcessRuntime
from onshore.runtimes.pyenv import ClientEnvironments
from onshore.runtimes.sandbox import Support
from onshore.services.apps import AppService
from onshore.services.blobs import BlobService
from onshore.services.calls import CallService
from onshore.services.clock import SystemClock
from onshore.services.container_inputs import ContainerInputs
from onshore.services.containers import ContainerService, Task
from onshore.services.execs import ExecService
from onshore.services.functions import FunctionService
from onshore.services.images import ImageInputs, ImageService
from onshore.services.invoke import InvokeService
from onshore.services.logs import LogService
from onshore.services.mounts import MountService
from onshore.services.secrets import SecretService
from onshore.services.standalone import StandalonePythons
from onshore.services.tasks import TaskDirectory
from onshore.services.tokens import TokenService
from onshore.store.sqlite import SqliteStore

log = logging.getLogger("onshore.server")

BLOB_SOCKET_NAME = "blobs.sock"


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the server process owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OnshoreServer:
    def __init__(
        self, config: ServerConfig, runtime: Runtime | None = None, builder: Builder | None = None
    ) -> None:
        self.config = config
        self.data = DataDir(config.data_dir)
        self.data.ensure()
        self.port = config.port or _free_port(config.host)
        self.http_port = config.http_port or (self.port + 1 if config.port else _free_port(config.host))
        self.url = f"http://{config.host}:{self.port}"
        # Containers reach the API over a unix socket: cheaper than loopback TCP per call. It lies in a
        # directory of its own, which container runtimes may show to containers (not the data dir itself).
        self.socket_dir = self.data.root / "sock"
        socket_path = self.socket_dir / "api.sock"
        self.socket_path = socket_path if len(str(socket_path)) < 100 else None
        container_url = f"unix://{socket_path}" if self.socket_path else self.url
        self.http_url = f"http://{config.host}:{self.http_port}"
        clock = SystemClock()
        self.store = SqliteStore(self.data.database)
        # The services' own background work (container starts and stops, app stops, drains): owned here,
        # cancelled and awaited on stop.
        self.background = Background("server")

        self.tokens = TokenService(self.store, clock)
        self.apps = AppService(self.store, clock, self.background)
        self.functions = FunctionService(self.store, self.apps, clock)
        self.secrets = SecretService(self.store, clock)
        self.mounts = MountService(self.store, self.data.root / "files", self.data.root / "workdirs", clock)
        self.blobs = BlobService(self.data.root / "blobs", self.data.blob_key(), self.http_url, clock)
        # Python for from_registry(..., add_python=...): only the docker runtime runs registry images.
        self.standalone = (
            StandalonePythons(self.mounts, self.data.root / "python-standalone")
            if config.runtime == "docker"
            else None
        )
        self.engine: DockerEngine | None = None
        self.docker: DockerRuntime | None = None
        if config.runtime not in RUNTIMES:
            raise ValueError(f"Unknown runtime {config.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if config.runtime == "docker" and runtime is None and builder is None:
            self.engine = DockerEngine(config.docker_host or None)
            labels = server_labels(self.data.root)
            builder = DockerBuilder(self.engine, labels)
            runtime = self.docker = DockerRuntime(
                self.engine,
                self.data.root / "docker",
                config.resolved_max_containers(),
                network=config.docker_network,
                labels=labels,
                blobs=(self.http_url, BLOB_SOCKET_NAME) if self.socket_path else None,
            )
        self.sandbox = Support("none", "the server was given its runtime and builder")
        if config.isolation == "none":
            self.sandbox = Support("none", "isolation is off (onshore server --isolation none)")
        elif runtime is None or builder is None:
            self.sandbox = sandbox.probe()
            if not self.sandbox.available:
                log.warning("containers and image builds run without isolation: %s", self.sandbox.reason)
        # What containers and image builds must not see: the server's data (tokens, the database, other
        # apps' files) and the home directory of the user running the server.
        hidden = [self.data.root.resolve()] + ([Path.home()] if Path.home() != Path("/") else [])
        self.builder = builder or ProcessBuilder(
            self.data.root / "images", PythonFinder(), self.sandbox, hidden
        )
        self.images = ImageService(
            self.store,
            self.builder,
            ImageInputs(
                mount_checksum=lambda mount_id: self.mounts.checksum(self.mounts.get(mount_id)),
                materialize_mount=self.mounts.materialize_tree,
                secret_env=self.secrets.env_for,
                app_live=self.apps.is_live,
            ),
            clock,
        )
        self.logs = LogService(clock)
        self.calls = CallService(self.store, self.functions.spec, make_result, clock)
        self.cgroups: Cgroups | None = None
        limits_reason = ""
        if runtime is None:
            try:
                self.cgroups = Cgroups()
            except CgroupError as exc:
                limits_reason = str(exc)
                log.info("hard memory/CPU limits are not available: %s", exc)
        self.runtime: Runtime = runtime or ProcessRuntime(
            self.data.root / "containers",
            ClientEnvironments(self.data.root / "envs"),
            config.resolved_max_containers(),
            sandbox=self.sandbox,
            hidden=hidden,
            cgroups=self.cgroups,
            container_url=container_url,
        )
        if limits_reason:
            self.runtime.capabilities.limits_reason = limits_reason
        launcher = Launcher(self.apps, self.functions, self.mounts, self.secrets, self.images)
        self.containers = ContainerService(
            self.runtime,
            self.calls,
            self.logs,
            launcher.plan,
            make_result,
            clock,
            server_url=container_url,
            stop_grace=config.container_stop_grace,
            background=self.background,
        )
        self.tasks = TaskDirectory(self.containers, self.calls, self.logs, clock, self.background)
        self.invoke = InvokeService(self.apps, self.functions, self.calls)
        self.container_inputs = ContainerInputs(self.functions, self.calls, self.containers)
        function_runner = BuildFunctionRunner(self.functions, self.invoke, self.containers)
        if isinstance(self.builder, ProcessBuilder):
            self.builder.function_runner = function_runner
        elif isinstance(self.builder, DockerBuilder) and self.docker is not None:
            self.builder.function_runner, self.builder.committer = function_runner, self.docker
        self.execs = ExecService(self.runtime, self.tasks, clock)
        self.containers.on_exit = self._on_container_exit
        # Process containers share this host's CPUs: past the core count, a function's scale-out waits for
        # CPU headroom (the docker runtime's engine may be another machine: no gate there).
        gate = ScaleOutGate(read_cpu_times, clock) if isinstance(self.runtime, ProcessRuntime) else None
        self.autoscaler = Autoscaler(
            self.calls,
            self.containers,
            self.functions.target,
            self.functions.warm_functions,
            clock,
            gate=gate,
            cores=usable_cores(),
            background=self.background,
        )
        self.janitor = Janitor(self.apps, self.blobs, self.calls, clock, config.app_heartbeat_timeout)
        self.calls.on_demand = self.autoscaler.demand_changed
        self.apps.on_stop = self._on_app_stop

        handlers: list[object] = [
            AppHandlers(self.apps, self.functions, self.containers, self.logs, self.url),
            FunctionHandlers(
                self.apps,
                self.functions,
                "" if self.runtime.capabilities.memory_limits else self.runtime.capabilities.limits_reason,
            ),
            CallHandlers(self.functions, self.calls, self.invoke),
            ContainerHandlers(
                self.calls, self.containers, ContainerInputs(self.functions, self.calls, self.containers)
            ),
            TaskHandlers(self.apps, self.tasks, self.execs, router_url=self.url),
            LogHandlers(self.apps, self.logs, self.tasks),
            MountHandlers(self.mounts, self.blobs, self.standalone),
            BlobHandlers(self.blobs),
            SecretHandlers(self.secrets),
            ImageHandlers(self.images),
            EnvironmentHandlers(),
        ]
        self.router = Router(handlers, Authenticator(self.tokens, self.containers))
        # The task command router (commands run in containers) is served next to the API, on its port.
        self.command_router = Router(
            [CommandRouterHandlers(self.execs)],
            RouterAuthenticator(self.execs.tokens),
            service=TaskCommandRouterBase,
            features=ROUTER_FEATURES,
        )
        self._grpc: GrpcServer | None = None
        self._grpc_unix: GrpcServer | None = None
        self._http: _HttpServer | None = None
        self._http_unix: _HttpServer | None = None
        self._http_unix_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._stopped = asyncio.Event()

    def _on_container_exit(self, task: Task) -> None:
        self.tasks.record_exit(task)
        self.execs.container_ended(task.task_id)

    async def _on_app_stop(self, app: App, reason: str) -> None:
        if "exception" in reason:  # its client failed (e.g. app_disconnect_reason_local_exception)
            self.images.abandon(app.app_id)
        self.calls.drop_app_calls(app.app_id, f"The app was stopped ({reason})")
        await self.containers.stop_app(app.app_id, f"its app stopped: {reason}")
        self.logs.mark_done(app.app_id)

    def _restore(self) -> None:
        for app in self.apps.stop_orphans_after_restart():
            self.logs.mark_done(app.app_id)
        self.functions.load_live()
        self.images.restore()
        requeued, failed = self.calls.restore(self.functions.is_runnable)
        if requeued or failed:
            log.info("restored spawned calls: %d inputs queued again, %d failed", requeued, failed)

    async def start(self) -> None:
        if self.docker is not None:
            await self.docker.prepare()  # EngineUnavailable when the engine does not answer
        created = self.tokens.ensure_initial()
        if created is not None:
            token, secret = created
            self.data.write_json(self.data.token_file, {"token_id": token.token_id, "token_secret": secret})
        self._restore()
        self._grpc = GrpcServer([self.router, self.command_router])
        await self._grpc.start(self.config.host, self.port)
        (self.data.root / "containers.sock").unlink(missing_ok=True)  # where older versions kept it
        if self.socket_path is not None:
            self.socket_dir.mkdir(exist_ok=True)
            os.chmod(self.socket_dir, 0o755)
            self.socket_path.unlink(missing_ok=True)
            self._grpc_unix = GrpcServer([self.router])
            await self._grpc_unix.start(path=str(self.socket_path))
            # Containers may run as another user than the server's (an image's USER): the directory above
            # keeps the host's other users out, and tasks authenticate on every call.
            os.chmod(self.socket_path, 0o666)
        # Spare processes connect to the API (over the socket above): they start once it is there.
        self.runtime.warm_up()
        http_config = uvicorn.Config(
            blob_app(self.blobs),
            host=self.config.host,
            port=self.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._http = _HttpServer(http_config)
        self._tasks = [
            asyncio.create_task(self._http.serve()),
            asyncio.create_task(self.autoscaler.run(), name="autoscaler"),
            asyncio.create_task(self.janitor.run(), name="janitor"),
        ]
        if self.docker is not None and self.socket_path is not None:
            await self._serve_blobs_on_socket()
        while not self._http.started:
            if self._tasks[0].done():
                self._tasks[0].result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        self.data.write_json(
            self.data.server_file,
            {"url": self.url, "http_url": self.http_url, "pid": os.getpid(), "runtime": self.runtime.name},
        )

    async def _serve_blobs_on_socket(self) -> None:
        """Blobs on a unix socket next to the API's, for containers that cannot reach the HTTP port."""
        path = self.socket_dir / BLOB_SOCKET_NAME
        path.unlink(missing_ok=True)
        config = uvicorn.Config(
            blob_app(self.blobs), uds=str(path), log_level="warning", lifespan="off", access_log=False
        )
        self._http_unix = _HttpServer(config)
        self._http_unix_task = task = asyncio.create_task(self._http_unix.serve())
        while not self._http_unix.started:
            if task.done():
                task.result()
                raise RuntimeError("the blob socket's HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        os.chmod(path, 0o666)

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            with contextlib.suppress(Exception):
                self.data.server_file.unlink()
            # The loops end after the tick in progress (their tasks are awaited below), and no new
            # background work starts; containers ended by the shutdown keep their spawned inputs
            # unfinished: they run again after a restart instead of failing.
            self.autoscaler.stop()
            self.janitor.stop()
            self.containers.shutting_down = True
            await self.background.close()
            await self.images.shutdown()
            await self.execs.shutdown()
            await self.runtime.shutdown()
            if self.cgroups is not None:
                self.cgroups.close()
            if self.engine is not None:
                await self.engine.close()
            for grpc_server in (self._grpc, self._grpc_unix):
                if grpc_server is not None:
                    grpc_server.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(grpc_server.wait_closed(), 3.0)
            if self.socket_path is not None:
                self.socket_path.unlink(missing_ok=True)
            if self._http is not None:
                self._http.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._tasks[0], 3.0)
            if self._http_unix is not None and self._http_unix_task is not None:
                self._http_unix.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._http_unix_task, 3.0)
                (self.socket_dir / BLOB_SOCKET_NAME).unlink(missing_ok=True)
            await asyncio.gather(*self._tasks[1:], return_exceptions=True)
            self.store.close()
        finally:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
