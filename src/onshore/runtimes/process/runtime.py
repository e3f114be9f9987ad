"""The process runtime: each container is a local subprocess running the client's container entrypoint.

To keep cold starts short, the runtime keeps a few pre-started processes that have already imported the
client's container entrypoint (the slow part of a container's start) and wait on stdin. Starting a container
hands one of them its settings; it then becomes that container, and a new spare is started behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from onshore.background import Background
from onshore.errors import Conflict, NotFound
from onshore.events import ExitSink, LogSink
from onshore.images.pythons import ClientPackages
from onshore.models import ImageConfig
from onshore.runtimes import overlay
from onshore.runtimes.base import (
    Capabilities,
    ContainerSpec,
    ExecProcess,
    ExecSpec,
)
from onshore.runtimes.gpu_inventory import device_paths, driver_files
from onshore.runtimes.host_exec import ExecTarget, start_exec
from onshore.runtimes.process import procs, sandbox
from onshore.runtimes.process.affinity import CorePinning
from onshore.runtimes.process.cgroups import Cgroup, Cgroups
from onshore.runtimes.process.container_fs import BuildUpper, ContainerLayout, merge_layers
from onshore.runtimes.process.procs import Proc
from onshore.runtimes.process.sandbox import Bind, SandboxSpec, Support, init_pid, sandbox_target
from onshore.runtimes.process.spare import IMAGE_SPARE_KINDS, SPARE_ATTEMPTS, SPARE_PROGRAM
from onshore.runtimes.pyenv import ClientEnvironments, client_package_dir, installed_client_version

log = logging.getLogger("onshore.runtime.process")

# Variables a container inherits from the server's environment; everything else comes from the spec.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "TMPDIR", "OPENBLAS_CORETYPE")


def _package_key(python: str) -> str:
    return hashlib.sha256(python.encode()).hexdigest()[:12]


def _mounts_outside_root(spec: ContainerSpec) -> list[str]:
    """The top-level dirs (other than /root) where this container's mounts place files."""
    tree = Path(spec.code_dir).parent
    return sorted(n for n in os.listdir(tree) if n != "root") if tree.is_dir() else []


def _python_on_path(env: dict[str, str], python: str) -> dict[str, str]:
    """`python` in a container is its own interpreter (as in an image of Modal's, where a web_server's command
    or a subprocess runs `python ...`): the interpreter's directory comes first on PATH."""
    bin_dir = os.path.dirname(python)
    parts = [p for p in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":") if p and p != bin_dir]
    env["PATH"] = ":".join([bin_dir, *parts])
    return env


def _gpu_binds(spec: ContainerSpec) -> list[Bind]:
    """A container's real GPUs in its sandbox: their device nodes (and only theirs), the driver's control
    nodes, and the host's driver libraries and tools at their own paths."""
    nodes = device_paths(spec.gpus)
    if not nodes:
        return []
    binds = [Bind(Path(p), p, writable=True) for p in nodes]
    return binds + [Bind(Path(p), p) for p in driver_files()]


def _boxed_env(image: ImageConfig, python: str) -> dict[str, str]:
    """The environment a sandboxed container starts with, before its own (secrets, credentials)."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.update(MODAL_IS_REMOTE="1", PYTHONUNBUFFERED="1", MODAL_CONFIG_PATH="/nonexistent.toml")
    env.update(image.env)
    if "PATH" not in image.env:
        _python_on_path(env, python)
    return env


class ProcessRuntime:
    name = "process"
    spare_retry_delay = 1.0  # seconds before a spare that failed to start is tried again

    def __init__(
        self,
        state_dir: Path,
        envs: ClientEnvironments,
        max_containers: int,
        spares: int = 2,
        packages: ClientPackages | None = None,
        sandbox: Support | None = None,
        hidden: list[Path] | None = None,
        cgroups: Cgroups | None = None,
        container_url: str = "",
    ) -> None:
        self._packages = packages or ClientPackages(state_dir / "client-packages")
        # Containers run in Linux namespaces where the host allows it (sandbox.probe()), else as processes.
        self._sandbox = sandbox or Support("none", "not probed")
        self._hidden = hidden or []
        self.capabilities = Capabilities(max_containers=max_containers, shares_host_cpus=True, gpus=True)
        # Volumes are overlays the server mounts on the host and swaps inside a container: root's to do.
        self.capabilities.volumes = self._sandbox.mechanism == "root" and os.geteuid() == 0
        # Hard memory/CPU limits need cgroups the server can write to.
        self._cgroups = cgroups
        if cgroups is not None:
            self.capabilities.memory_limits = True
            self.capabilities.limits_reason = ""
        self._state_dir = state_dir
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._envs = envs
        self._spares_wanted = spares
        self._spares: list[Proc] = []
        self._background = Background("process runtime")  # spare starts and stops
        # Spares of recently started custom images (sandboxed, client imported): image key -> processes.
        self._image_spares: dict[tuple[str, ...], list[Proc]] = {}
        # Where sandboxes are available every container is sandboxed, and the default image keeps
        # `spares` sandboxed spares (the key of containers that talk to the server at container_url).
        self._container_url = container_url
        self._default_key: tuple[str, ...] = ()
        self._default_starting = 0
        self._refilling = False
        self._closed = False
        self._procs: dict[str, Proc] = {}
        self._pinning = CorePinning()  # each container on one core until it needs more
        self._on_log: LogSink = lambda t, fd, s: None
        self._on_exit: ExitSink = lambda t, rc, detail: None

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None:
        self._on_log, self._on_exit = on_log, on_exit

    def _client_package_dir(self, python: str) -> str:
        """A folder holding `modal` as `<folder>/pkg/modal`, which the container imports the client from.

        Modal containers have the client at /pkg/modal, and the client drops the frames under "/pkg/modal/"
        from remote tracebacks; importing it from a path of that shape keeps users' tracebacks clean.
        """
        source = client_package_dir(python)
        link = self._state_dir / "pkg" / _package_key(python) / "pkg" / "modal"
        if source is not None and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                link.symlink_to(source, target_is_directory=True)
        return str(link.parent)

    def _base_env(self, python: str = sys.executable) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
        env["PYTHONPATH"] = self._client_package_dir(python)
        env["MODAL_IS_REMOTE"] = "1"
        env["MODAL_CONFIG_PATH"] = str(self._state_dir / "no-modal.toml")
        env["PYTHONUNBUFFERED"] = "1"
        return _python_on_path(env, python)

    def _cgroup(self, spec: ContainerSpec) -> Cgroup | None:
        """The cgroup enforcing a container's hard limits, or None when it has none."""
        if not (spec.memory_limit_mb or spec.cpu_limit):
            return None
        if self._cgroups is None:
            raise Conflict(f"Hard memory/CPU limits cannot be enforced: {self.capabilities.limits_reason}")
        return self._cgroups.create(
            spec.task_id,
            spec.memory_limit_mb * 1024 * 1024 if spec.memory_limit_mb else None,
            spec.cpu_limit or None,
        )

    async def _spawn(
        self,
        python: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdin: int,
        cgroup: Cgroup | None = None,
    ) -> Proc:
        return await procs.spawn(python, argv, env, cwd, stdin, cgroup, self._forward, self._wait)

    # ---------------------------------------------------------------- spares
    def warm_up(self) -> None:
        """Start the spare processes (called once the server runs)."""
        if self._sandbox.available:
            pkg = self._default_pkg()
            # What _image_key() gives a default-image container of this server's own client.
            self._default_key = (sys.executable, str(pkg), "/root", self._container_url)
            self._keep_image_spare(self._default_key, ImageConfig(), sys.executable, pkg)
            return
        if not self._refilling and len(self._spares) < self._spares_wanted and not self._closed:
            self._refilling = True
            self._background.spawn(self._refill(), "start spare processes")

    async def _refill(self) -> None:
        try:
            while len(self._spares) < self._spares_wanted and not self._closed:
                entry = await self._spawn(
                    sys.executable,
                    ["-c", SPARE_PROGRAM],
                    self._base_env(),
                    str(self._state_dir),
                    asyncio.subprocess.PIPE,
                )
                self._spares.append(entry)
        except Exception:
            log.exception("could not start a spare container process")
        finally:
            self._refilling = False

    def _default_pkg(self, python: str = sys.executable) -> Path:
        """The folder whose `pkg/modal` is this interpreter's client, shown at /pkg in a sandbox."""
        return Path(self._client_package_dir(python)).parent

    # ---------------------------------------------------------------- containers
    def _image_key(
        self, spec: ContainerSpec, image: ImageConfig, python: str, pkg: Path | None
    ) -> tuple[str, ...]:
        """What a spare for this container must share with it; () when spares cannot serve it."""
        if spec.image_build is not None or spec.memory_limit_mb or spec.cpu_limit:
            return ()
        if any(not g.emulated for g in spec.gpus):
            return ()  # a spare's sandbox has no GPU device nodes: they are bound when it is made
        if _mounts_outside_root(spec):
            return ()  # a spare's layers are fixed when it starts; these files need a layer of their own
        url = spec.env.get("MODAL_SERVER_URL", "")
        return (python, str(pkg or ""), image.workdir or "/root", url, *image.layers)

    def _take_image_spare(self, key: tuple[str, ...]) -> Proc | None:
        pool = self._image_spares.get(key, [])
        while pool:
            entry = pool.pop(0)
            if entry.process.returncode is None:
                return entry
        return None

    def _keep_image_spare(
        self, key: tuple[str, ...], image: ImageConfig, python: str, pkg: Path | None
    ) -> None:
        """Keep spares for this image (started in the background): `spares` of them for the default image,
        one for each of the most recently used custom images."""
        if not key or self._closed:
            return
        spawn = self._background.spawn
        if key == self._default_key:
            pool = self._image_spares.setdefault(key, [])
            for _ in range(self._spares_wanted - len(pool) - self._default_starting):
                self._default_starting += 1
                spawn(self._spawn_image_spare(key, image, python, pkg), "start a spare")
            return
        if self._image_spares.get(key):
            return
        self._image_spares.pop(key, None)
        self._image_spares[key] = []  # the newest image last
        custom = [k for k in self._image_spares if k != self._default_key]
        for old_key in custom[: max(0, len(custom) - IMAGE_SPARE_KINDS)]:
            for entry in self._image_spares.pop(old_key):
                spawn(self._stop_entry(entry, 0), "stop a spare of an image no longer recent")
        spawn(self._spawn_image_spare(key, image, python, pkg), "start a spare")

    async def _spawn_image_spare(
        self, key: tuple[str, ...], image: ImageConfig, python: str, pkg: Path | None
    ) -> None:
        """Start one spare; a start that fails is tried again a few times, so the pool does not stay short."""
        try:
            for attempt in range(1, SPARE_ATTEMPTS + 1):
                error = await self._spawn_image_spare_now(key, image, python, pkg)
                if error is None or self._closed or key not in self._image_spares:
                    return
                if attempt == SPARE_ATTEMPTS:
                    log.error("could not start a spare process for an image: %s", error, exc_info=error)
                    return
                delay = self.spare_retry_delay * 2 ** (attempt - 1)
                log.info("could not start a spare process (%s); trying again in %.1f s", error, delay)
                await asyncio.sleep(delay)
        finally:
            if key == self._default_key:
                self._default_starting -= 1

    async def _spawn_image_spare_now(
        self, key: tuple[str, ...], image: ImageConfig, python: str, pkg: Path | None
    ) -> Exception | None:
        """Start a spare for this image into its pool; what kept it from starting, if anything."""
        spare_dir = self._state_dir / "spares" / os.urandom(8).hex()
        root, io = spare_dir / "root", spare_dir / "io"
        try:
            root.mkdir(parents=True)
            io.mkdir()
            # The spare's /root is a dir of its own: what the image has there is copied in.
            await asyncio.to_thread(merge_layers, [Path(layer) for layer in image.layers], "root", root)
            layout = ContainerLayout(image, python, None, None, pkg, self._hidden, (root, io))
            env = {**_boxed_env(image, python), "MODAL_SERVER_URL": key[3]}
            box = layout.spec(env, [])
            argv = [python, "-c", SPARE_PROGRAM]
            entry = await self._spawn_boxed(box, argv, spare_dir / "scratch", asyncio.subprocess.PIPE)
        except Exception as exc:
            shutil.rmtree(spare_dir, ignore_errors=True)
            return exc
        entry.spare_dir, entry.image_key = spare_dir, key
        if key in self._image_spares and not self._closed:
            self._image_spares[key].append(entry)
        else:
            await self._stop_entry(entry, 0)
        return None

    async def _hand_over_image_spare(self, entry: Proc, spec: ContainerSpec) -> None:
        """A spare becomes this container: its code and arguments in its own dirs, then its environment."""
        assert entry.spare_dir is not None
        root, io = entry.spare_dir / "root", entry.spare_dir / "io"
        await asyncio.to_thread(shutil.copytree, spec.code_dir, root, symlinks=True, dirs_exist_ok=True)
        (io / "args").write_bytes(spec.container_args)
        env = {k: v for k, v in spec.env.items() if k not in ("MODAL_SERVER_URL", "PYTHONPATH")}
        env["MODAL_TASK_ID"] = spec.task_id
        await procs.send_go(entry, env, entry.cwd)

    async def _spawn_boxed(self, box: SandboxSpec, argv: list[str], scratch: Path, stdin: int) -> Proc:
        """Spawn `argv` in the sandbox `box`; the spawned process is the sandbox's launcher."""
        full = await asyncio.to_thread(sandbox.command, box, argv, scratch)
        launcher = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
        entry = await self._spawn(full[0], full[1:], launcher, str(self._state_dir), stdin)
        entry.scratch = scratch
        entry.env, entry.cwd = box.env, box.workdir  # what `modal container exec` runs with
        return entry

    async def _start_sandboxed(self, spec: ContainerSpec, image: ImageConfig) -> Proc:
        """A container of a custom image: its interpreter in a sandbox with the image's files."""
        version = spec.client_version or installed_client_version()
        python = image.python or await self._envs.python_for(spec.client_version)
        if image.python:
            pkg = Path(await self._packages.folder(version, image.python, image.python_version)).parent
        else:  # the client of the interpreter's own environment, shown at /pkg like an image's
            pkg = self._default_pkg(python)
        key = self._image_key(spec, image, python, pkg)
        spare = self._take_image_spare(key) if key else None
        self._keep_image_spare(key, image, python, pkg)
        if spare is not None:
            try:
                await self._attach_volumes(spare, spec)
            except (overlay.MountError, Conflict) as exc:
                # e.g. a mount point in a host directory, which a spare shows read-only: a full start makes it
                log.info(
                    "container %s: a spare cannot take its volumes (%s); starting it afresh",
                    spec.task_id,
                    exc,
                )
                self._background.spawn(self._stop_entry(spare, 0), "stop a spare that could not take volumes")
                spare = None
            except BaseException:  # cancelled, or a failure of its own: the spare goes, the error stays
                self._background.spawn(self._stop_entry(spare, 0), "stop a spare that could not take volumes")
                raise
        if spare is not None:
            log.info("container %s starts from a spare process of its image", spec.task_id)
            await self._hand_over_image_spare(spare, spec)
            return spare
        args_path = self._state_dir / f"{spec.task_id}.args"
        args_path.write_bytes(spec.container_args)
        layout = ContainerLayout(image, python, Path(spec.code_dir), args_path, pkg, self._hidden)
        env = {**_boxed_env(image, python), **spec.env, "MODAL_TASK_ID": spec.task_id}
        cgroup = self._cgroup(spec)
        # The sandbox's init puts itself in the cgroup before anything of the container runs.
        box = layout.spec(env, cgroup.procs_files if cgroup is not None else [])
        if isinstance(spec.image_build, BuildUpper):  # Image.run_function: its writes become an image layer
            box.upper = spec.image_build.path
        box.binds += [Bind(Path(v.source), v.target, writable=not v.read_only) for v in spec.volumes]
        box.binds += _gpu_binds(spec)
        try:
            argv = [python, "-m", "modal._container_entrypoint"]
            scratch = self._state_dir / "sandboxes" / spec.task_id
            entry = await self._spawn_boxed(box, argv, scratch, asyncio.subprocess.DEVNULL)
        except BaseException:
            if cgroup is not None:
                cgroup.close()
            raise
        entry.cgroup, entry.memory_limit_mb = cgroup, spec.memory_limit_mb
        return entry

    async def _attach_volumes(self, entry: Proc, spec: ContainerSpec) -> None:
        """Show a container's volumes in a spare about to become it (its sandbox was made before they were
        known): each host mount, cloned into the spare's mount namespace before its code runs."""
        if not spec.volumes:
            return
        init = await asyncio.to_thread(init_pid, entry.process.pid)
        if not init:
            raise Conflict("The spare process's sandbox has no init process to mount volumes in")
        for volume in spec.volumes:
            await overlay.bind_into(init, volume.source, volume.target)

    async def _image_python(self, spec: ContainerSpec) -> tuple[str, dict[str, str]]:
        """The interpreter a container runs and the environment its image adds."""
        image = spec.image
        if image is None:
            return await self._envs.python_for(spec.client_version), {}
        env = dict(image.env)
        if not image.python:  # the server's own interpreter, with what the image's ENV lines set
            return await self._envs.python_for(spec.client_version), env
        version = spec.client_version or installed_client_version()
        env["PYTHONPATH"] = await self._packages.folder(version, image.python, image.python_version)
        return image.python, env

    async def start(self, spec: ContainerSpec) -> int:
        image = spec.image
        if spec.image_build is not None and not isinstance(spec.image_build, BuildUpper):
            raise Conflict("The process runtime builds Image.run_function layers from the container's writes")
        if spec.image_build is not None and not self._sandbox.available:
            raise Conflict(f"Image.run_function needs Linux namespaces: {self._sandbox.reason}")
        if self._sandbox.available:  # every container runs in its own namespaces
            boxed = await self._start_sandboxed(spec, image or ImageConfig())
            boxed.task_id = spec.task_id
            self._procs[spec.task_id] = boxed
            self._pin(spec, boxed)
            return boxed.process.pid
        if image is not None and image.layers:
            raise Conflict(
                "This image places files in the container's filesystem, which needs Linux namespaces, "
                f"and this host has none: {self._sandbox.reason}"
            )
        if spec.volumes:
            raise Conflict(
                f"Volumes are mounted in Linux namespaces, and this host has none: {self._sandbox.reason}"
            )
        outside = _mounts_outside_root(spec)
        if outside:
            raise Conflict(
                f"Files are mounted at /{outside[0]}, outside /root, which needs Linux namespaces, and this "
                f"host has none: {self._sandbox.reason}"
            )
        python, image_env = await self._image_python(spec)
        args_path = self._state_dir / f"{spec.task_id}.args"
        args_path.write_bytes(spec.container_args)
        env = {**image_env, **spec.env}
        env["MODAL_CONTAINER_ARGUMENTS_PATH"] = str(args_path)
        env["MODAL_TASK_ID"] = spec.task_id
        cgroup = self._cgroup(spec)
        entry = self._take_spare() if python == sys.executable and "PYTHONPATH" not in env else None
        if entry is not None:
            if cgroup is not None:
                cgroup.add(entry.process.pid)  # before it runs any user code: all it starts is limited
                entry.cgroup, entry.memory_limit_mb = cgroup, spec.memory_limit_mb
            entry.task_id = spec.task_id
            self._procs[spec.task_id] = entry
            await procs.send_go(entry, env, spec.code_dir)
            self.warm_up()
        else:
            full_env = self._base_env(python)
            full_env.update(env)
            entry = await self._spawn(
                python,
                ["-m", "modal._container_entrypoint"],
                full_env,
                spec.code_dir,
                asyncio.subprocess.DEVNULL,
                cgroup,
            )
            entry.memory_limit_mb = spec.memory_limit_mb
            entry.task_id = spec.task_id
            self._procs[spec.task_id] = entry
        self._pin(spec, entry)
        return entry.process.pid

    def _pin(self, spec: ContainerSpec, entry: Proc) -> None:
        if spec.cpu_limit <= 1:  # a limit of more cores is the user's: they are all its to use
            self._pinning.pin(spec.task_id, entry.process.pid)

    def _take_spare(self) -> Proc | None:
        while self._spares:
            entry = self._spares.pop(0)
            if entry.process.returncode is None:
                return entry
        return None

    def _forward(self, entry: Proc, fd: int, text: str) -> None:
        if not text:
            return
        if entry.task_id:
            self._on_log(entry.task_id, fd, text)
        else:
            log.warning("spare container process %d: %s", entry.process.pid, text.rstrip())

    async def _wait(self, entry: Proc) -> None:
        rc = await entry.process.wait()
        self._pinning.release(entry.task_id)
        # End anything the container left behind in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*entry.readers), 2.0)
        if entry in self._spares:
            self._spares.remove(entry)
        if entry in self._image_spares.get(entry.image_key, []):
            self._image_spares[entry.image_key].remove(entry)
        if entry.spare_dir is not None:
            await asyncio.to_thread(sandbox.cleanup, entry.spare_dir / "scratch")
            await asyncio.to_thread(shutil.rmtree, entry.spare_dir, True)
        if not entry.task_id:
            if not self._closed:
                log.warning("spare container process %d exited with %d", entry.process.pid, rc)
            return
        self._procs.pop(entry.task_id, None)
        with contextlib.suppress(FileNotFoundError):
            (self._state_dir / f"{entry.task_id}.args").unlink()
        if entry.scratch is not None:
            await asyncio.to_thread(sandbox.cleanup, entry.scratch)
        detail = ""
        if entry.cgroup is not None:
            if entry.cgroup.oom_killed():
                limit = f"its limit is {entry.memory_limit_mb} MiB" if entry.memory_limit_mb else "its limit"
                detail = f"ran out of memory ({limit}) and was killed"
            await asyncio.to_thread(entry.cgroup.close)
        self._on_exit(entry.task_id, rc, detail)

    async def stop(self, task_id: str, grace: float) -> None:
        entry = self._procs.get(task_id)
        if entry is None:
            return
        await self._stop_entry(entry, grace)

    async def _stop_entry(self, entry: Proc, grace: float) -> None:
        await procs.stop(entry, grace)

    async def exec(self, task_id: str, spec: ExecSpec) -> ExecProcess:
        entry = self._procs.get(task_id)
        if entry is None or entry.process.returncode is not None:
            raise NotFound(f"Container {task_id} is not running")
        target = ExecTarget(entry.process.pid, entry.env, entry.cwd)
        if entry.scratch is not None:
            userns = self._sandbox.mechanism == "userns"
            target = sandbox_target(entry.process.pid, userns, entry.env, entry.cwd)
        return await start_exec(target, spec)

    def running(self) -> list[str]:
        return list(self._procs)

    async def namespace_pid(self, task_id: str) -> int | None:
        entry = self._procs.get(task_id)
        if entry is None or entry.process.returncode is not None or entry.scratch is None:
            return None
        return await asyncio.to_thread(init_pid, entry.process.pid) or None

    async def shutdown(self) -> None:
        self._closed = True
        await self._background.close(cancel=False)  # spares being started join their pools, stopped below
        self._pinning.close()
        spares, self._spares = self._spares, []
        for pool in self._image_spares.values():
            spares += pool
        self._image_spares.clear()
        await asyncio.gather(
            *(self._stop_entry(e, 2.0) for e in list(self._procs.values())),
            *(self._stop_entry(e, 0) for e in spares),
            return_exceptions=True,
        )
