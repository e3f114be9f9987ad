"""The composition root: stores -> services -> handlers -> gRPC and HTTP servers, plus the loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import uvicorn
from modal_proto.task_command_router_grpc import TaskCommandRouterBase
from starlette.applications import Starlette

from onshore.api.apps import AppHandlers
from onshore.api.base import Authenticator, Router
from onshore.api.blobs import BlobHandlers
from onshore.api.calls import CallHandlers
from onshore.api.command_router import ROUTER_FEATURES, CommandRouterHandlers, RouterAuthenticator
from onshore.api.containers import ContainerHandlers
from onshore.api.environments import EnvironmentHandlers
from onshore.api.functions import FunctionHandlers
from onshore.api.images import ImageHandlers
from onshore.api.kv import KvHandlers
from onshore.api.logs import LogHandlers
from onshore.api.mounts import MountHandlers
from onshore.api.secrets import SecretHandlers
from onshore.api.tasks import TaskHandlers
from onshore.api.transport import CoalescingServer as GrpcServer
from onshore.api.volumes import VolumeHandlers
from onshore.background import Background
from onshore.config import DataDir, ServerConfig
from onshore.events import Events
from onshore.http.blobs import blob_app, blob_routes
from onshore.http.gateway import Gateway
from onshore.http.pages import Sessions, page_routes
from onshore.http.status import status_routes
from onshore.http.volume_blocks import volume_routes
from onshore.loops.autoscaler import Autoscaler
from onshore.loops.hostcpu import ScaleOutGate, read_cpu_times
from onshore.loops.janitor import Janitor
from onshore.loops.scheduler import Scheduler
from onshore.models import App
from onshore.protocol.asgi import restore_web_routes
from onshore.protocol.build_runner import BuildFunctionRunner
from onshore.protocol.launch import Launcher
from onshore.protocol.options import variant_spec
from onshore.protocol.results import make_result
from onshore.protocol.schedules import ScheduledRunner
from onshore.runtimes import docker as docker_backend
from onshore.runtimes import process as process_backend
from onshore.runtimes.base import FD_INFO, Backend, BackendConfig, host_resources
from onshore.runtimes.gpu_inventory import host_gpus
from onshore.scheduling.placement import Ledger
from onshore.services.apps import AppService
from onshore.services.blobs import BlobService
from onshore.services.call_data import CallData
from onshore.services.calls import CallService
from onshore.services.clock import SystemClock
from onshore.services.container_inputs import ContainerInputs
from onshore.services.containers import ContainerService, Task
from onshore.services.execs import ExecService
from onshore.services.functions import FunctionService
from onshore.services.images import ImageInputs, ImageService, image_config
from onshore.services.invoke import InvokeService
from onshore.services.kv import KvService
from onshore.services.logs import LogService
from onshore.services.mounts import MountService
from onshore.services.overview import OverviewService
from onshore.services.schedules import ScheduleService
from onshore.services.secrets import SecretService
from onshore.services.standalone import StandalonePythons
from onshore.services.tasks import TaskDirectory
from onshore.services.tokens import TokenService
from onshore.services.volume_mounts import VolumeMounts
from onshore.services.volume_objects import VolumeObjects
from onshore.services.volumes import VolumeService
from onshore.services.web import WebService
from onshore.store.sqlite import SqliteStore

log = logging.getLogger("onshore.server")

BLOB_SOCKET_NAME = "blobs.sock"
# The autoscaler reconciles at least this often (and at once on a new input), and the scale-out gate reads the
# host's CPU over windows of CPU_WINDOW_S: a burst of I/O-bound calls doubles its containers each window.
AUTOSCALER_TICK_S = 0.25
CPU_WINDOW_S = 0.25


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the server process owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Http:
    """A uvicorn server of the blob app, on a TCP port or a unix socket, run in a task of its own."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._server = _HttpServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = task = asyncio.create_task(self._server.serve(), name="http")
        while not self._server.started:
            if task.done():
                task.result()
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 3.0)


# The backends: each package's build(config) makes one (a new runtime adds its line here).
BACKENDS: dict[str, Callable[[BackendConfig], Backend]] = {
    "process": process_backend.build,
    "docker": docker_backend.build,
}


class OnshoreServer:
    def __init__(self, config: ServerConfig, backend: Backend | None = None) -> None:
        """backend: the one to run on (tests); None builds the one config.runtime names."""
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
        if backend is None:
            if config.runtime not in BACKENDS:
                raise ValueError(f"Unknown runtime {config.runtime!r}: choose one of {', '.join(BACKENDS)}")
            gpus, gpu_note = host_gpus(config.gpus)
            # What containers and image builds must not see: the server's data (tokens, the database,
            # other apps' files) and the home directory of the user running the server.
            hidden = [self.data.root.resolve()] + ([Path.home()] if Path.home() != Path("/") else [])
            backend = BACKENDS[config.runtime](
                BackendConfig(
                    root=self.data.root,
                    max_containers=config.resolved_max_containers(),
                    container_url=container_url,
                    http_url=self.http_url,
                    blob_socket=BLOB_SOCKET_NAME if self.socket_path else "",
                    hidden=hidden,
                    isolation=config.isolation,
                    docker_host=config.docker_host,
                    docker_network=config.docker_network,
                    gpus=gpus,
                    gpu_note=gpu_note,
                )
            )
        self.backend = backend
        self.runtime = backend.runtime
        can = backend.capabilities
        clock = SystemClock()
        events = Events()
        self.store = SqliteStore(self.data.database)
        # The services' own background work (container starts and stops, app stops, drains): owned here,
        # cancelled and awaited on stop.
        self.background = Background("server")

        self.tokens = TokenService(self.store, clock)
        self.apps = AppService(self.store, clock, self.background, events)
        self.functions = FunctionService(self.store, self.apps, clock, variant_spec)
        self.secrets = SecretService(self.store, clock)
        self.mounts = MountService(self.store, self.data.root / "files", self.data.root / "workdirs", clock)
        self.blobs = BlobService(self.data.root / "blobs", self.data.blob_key(), self.http_url, clock)
        # Python for from_registry(..., add_python=...): for backends that run registry images.
        standalone = (
            StandalonePythons(self.mounts, self.data.root / "python-standalone")
            if can.registry_images
            else None
        )
        self.logs = LogService(clock)
        self.kv = KvService(self.store, clock)
        self.volumes = VolumeService(self.store, self.kv, VolumeObjects(self.data.root / "volumes"))
        self.volume_mounts = VolumeMounts(self.volumes, self.runtime)
        self.calls = CallService(self.store, self.functions.spec, make_result, clock, events=events)
        launcher = Launcher(
            self.apps, self.functions, self.mounts, self.secrets, partial(image_config, self.store)
        )
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
            events=events,
            volumes=self.volume_mounts if can.volumes else None,
            ledger=Ledger(backend.nodes, strict_gpus=config.gpu_fallback == "strict"),
        )
        self.tasks = TaskDirectory(self.containers, self.calls, self.logs, clock, self.background)
        self.invoke = InvokeService(self.apps, self.functions, self.calls)
        self.schedules = ScheduleService(self.store, self.functions, clock)
        # The HTTP port as users reach it: web endpoints and the app pages the client links to.
        self.public_http_url = (config.public_url or self.http_url).rstrip("/")
        self.web = WebService(self.public_http_url, config.web_domain, self.apps.is_live)
        self.images = ImageService(
            self.store,
            backend.builder,
            ImageInputs(
                mount_checksum=lambda mount_id: self.mounts.checksum(self.mounts.get(mount_id)),
                materialize_mount=self.mounts.materialize_tree,
                secret_env=self.secrets.env_for,
                app_live=self.apps.is_live,
            ),
            clock,
            runner=BuildFunctionRunner(self.functions, self.invoke, self.containers),
        )
        self.execs = ExecService(self.runtime, self.tasks, clock)
        # Containers that share this host's CPUs: past the core count, a function's scale-out waits for
        # CPU headroom (a backend's machines may be others: no gate there).
        gate = ScaleOutGate(read_cpu_times, clock, window=CPU_WINDOW_S) if can.shares_host_cpus else None
        self.autoscaler = Autoscaler(
            self.calls,
            self.containers,
            self.functions.target,
            self.functions.warm_functions,
            clock,
            gate=gate,
            cores=max(1, int(backend.cpus if can.shares_host_cpus else host_resources().cpus)),
            background=self.background,
            tick=AUTOSCALER_TICK_S,
        )
        self.janitor = Janitor(
            self.apps,
            self.blobs,
            self.calls,
            clock,
            config.app_heartbeat_timeout,
            kv=self.kv,
            volumes=self.volumes,
        )

        # Cron and Period: each due schedule starts a spawned call with no arguments.
        self.scheduler = Scheduler(self.schedules, ScheduledRunner(self.functions, self.invoke).start, clock)

        events.demand_changed.connect(self.autoscaler.demand_changed)
        events.kill_task.connect(self.containers.kill)
        events.input_note.connect(lambda app, task, fn, text: self.logs.append(app, task, fn, FD_INFO, text))
        events.container_exited.connect(self.tasks.record_exit)
        events.container_exited.connect(lambda task: self.execs.container_ended(task.task_id))
        events.container_exited.connect(self._unmount_volumes)
        events.app_stopped.connect(self._on_app_stop)

        call_data = CallData(self.calls)
        handlers: list[object] = [
            AppHandlers(
                self.apps, self.functions, self.containers, self.logs, self.schedules, self.public_http_url
            ),
            FunctionHandlers(
                self.apps,
                self.functions,
                self.web,
                can,
                self.containers.ledger.never,
                self.autoscaler.demand_changed,
            ),
            CallHandlers(self.functions, self.calls, call_data, self.invoke),
            ContainerHandlers(
                self.calls,
                call_data,
                self.containers,
                ContainerInputs(self.functions, self.calls, self.containers),
            ),
            TaskHandlers(self.apps, self.tasks, self.execs, router_url=self.url),
            LogHandlers(self.apps, self.logs, self.tasks),
            MountHandlers(self.mounts, self.blobs, standalone),
            BlobHandlers(self.blobs),
            SecretHandlers(self.secrets),
            KvHandlers(self.kv),
            VolumeHandlers(self.volumes, self.volume_mounts, self.mounts, self.blobs),
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
        self._stack = contextlib.AsyncExitStack()
        self._stopping = False
        self._stopped = asyncio.Event()

    def _unmount_volumes(self, task: Task) -> None:
        if self.volume_mounts.mounted_in(task.task_id):
            self.background.spawn(
                self.volume_mounts.detach(task.task_id), f"unmount the volumes of {task.task_id}"
            )

    async def _on_app_stop(self, app: App, reason: str, failed: bool) -> None:
        if failed:  # its client gave up on an error: no one waits for its builds
            self.images.abandon(app.app_id)
        self.web.drop_app(app.app_id)
        self.schedules.drop_app(app.app_id)
        self.calls.drop_app_calls(app.app_id, f"The app was stopped ({reason})")
        await self.containers.stop_app(app.app_id, f"its app stopped: {reason}")
        self.logs.mark_done(app.app_id)

    def _restore(self) -> None:
        for app in self.apps.stop_orphans_after_restart():
            self.logs.mark_done(app.app_id)
        restore_web_routes(self.web, self.functions.load_live())
        scheduled = self.schedules.restore(self.apps.is_live)
        if scheduled:
            log.info("restored %d schedules", scheduled)
        self.volume_mounts.cleanup_leftovers()
        self.images.restore()
        requeued, failed = self.calls.restore(self.functions.is_runnable)
        if requeued or failed:
            log.info("restored spawned calls: %d inputs queued again, %d failed", requeued, failed)

    async def start(self) -> None:
        """Start every part in order; each one started is stopped by stop(), in reverse order. A part that
        fails to start stops those started before it."""
        stack = self._stack
        # The backend stops while the API still serves (its containers may call it as they end).
        backend = contextlib.AsyncExitStack()
        try:
            stack.callback(self.store.close)
            for close in self.backend.closes:
                backend.push_async_callback(close)
            for prepare in self.backend.starts:  # e.g. EngineUnavailable when the engine does not answer
                await prepare()
            self.containers.ledger.set_nodes(self.backend.nodes)  # known once the backend has started
            created = self.tokens.ensure_initial()
            if created is not None:
                token, secret = created
                self.data.write_json(
                    self.data.token_file, {"token_id": token.token_id, "token_secret": secret}
                )
            self._restore()
            await self._serve_grpc()
            # Spare processes connect to the API (over the socket above): they start once it is there.
            self.runtime.warm_up()
            await self._serve_http()
            stack.push_async_callback(backend.aclose)
            # Stopped before the backend: builds and commands end, then no new background work starts
            # (containers ended by the shutdown keep their spawned inputs unfinished: they run again after a
            # restart instead of failing).
            stack.push_async_callback(self.execs.shutdown)
            stack.push_async_callback(self.images.shutdown)
            stack.push_async_callback(self._close_background)
            for loop in (self.autoscaler, self.janitor, self.scheduler):
                loop.start()
                stack.push_async_callback(loop.close)
            self.data.write_json(
                self.data.server_file,
                {
                    "url": self.url,
                    "http_url": self.http_url,
                    "pid": os.getpid(),
                    "runtime": self.runtime.name,
                },
            )
            stack.callback(self.data.server_file.unlink, missing_ok=True)
        except BaseException:
            await stack.aclose()
            await backend.aclose()
            raise

    async def _close_background(self) -> None:
        self.containers.shutting_down = True
        await self.background.close()

    async def _serve_grpc(self) -> None:
        grpc = GrpcServer([self.router, self.command_router])
        await grpc.start(self.config.host, self.port)
        self._stack.push_async_callback(_close_grpc, grpc)
        (self.data.root / "containers.sock").unlink(missing_ok=True)  # where older versions kept it
        if self.socket_path is None:
            return
        self.socket_dir.mkdir(exist_ok=True)
        os.chmod(self.socket_dir, 0o755)
        self.socket_path.unlink(missing_ok=True)
        unix = GrpcServer([self.router])
        await unix.start(path=str(self.socket_path))
        self._stack.callback(self.socket_path.unlink, missing_ok=True)
        self._stack.push_async_callback(_close_grpc, unix)
        # Containers may run as another user than the server's (an image's USER): the directory above keeps
        # the host's other users out, and tasks authenticate on every call.
        os.chmod(self.socket_path, 0o666)

    async def _serve_http(self) -> None:
        overview = OverviewService(
            self.apps,
            self.functions,
            self.web,
            self.containers,
            self.tasks,
            self.calls,
            self.logs,
            self.schedules,
        )
        sessions = Sessions(self.data.blob_key(), self.tokens)
        site = Starlette(
            routes=blob_routes(self.blobs)
            + volume_routes(self.blobs, self.volumes.objects)
            + page_routes(overview, self.tokens, sessions)
            + status_routes(overview, self.tokens)
        )
        gateway = Gateway(
            self.web, self.functions, self.invoke, self.calls, self.blobs, self.tokens.proxy_allowed, site
        )
        http = _Http(
            uvicorn.Config(
                gateway,
                host=self.config.host,
                port=self.http_port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        await http.start()
        self._stack.push_async_callback(http.close)
        if self.backend.capabilities.blob_socket and self.socket_path is not None:
            # Blobs on a unix socket next to the API's, for containers that cannot reach the HTTP port.
            path = self.socket_dir / BLOB_SOCKET_NAME
            path.unlink(missing_ok=True)
            unix = _Http(
                uvicorn.Config(
                    blob_app(self.blobs), uds=str(path), log_level="warning", lifespan="off", access_log=False
                )
            )
            await unix.start()
            self._stack.callback(path.unlink, missing_ok=True)
            self._stack.push_async_callback(unix.close)
            os.chmod(path, 0o666)

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            await self._stack.aclose()
        finally:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def _close_grpc(server: GrpcServer) -> None:
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 3.0)
