"""Build image layers for the process runtime: a uv virtual environment per layer, on host interpreters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from onshore.images import context as context_dir
from onshore.images import dockerfile, pipconf
from onshore.images.dockerfile import Instruction
from onshore.images.model import BuildFailed, BuildFunction, BuildJob, FunctionRunner, LogFn
from onshore.images.pythons import PythonFinder, uv_binary
from onshore.models import ImageConfig
from onshore.runtimes.process import sandbox
from onshore.runtimes.process.container_fs import BuildUpper, interpreter_binds
from onshore.runtimes.process.sandbox import Bind, SandboxError, SandboxSpec, Support


def host_python_version() -> str:
    return ".".join(str(p) for p in sys.version_info[:3])


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the client's debian_slim() base layer runs after FROM: on the process runtime the host provides the
# compilers and tools these install, so they are acknowledged, not run.
_BASE_SETUP = {
    "apt-get update",
    "apt-get install -y gcc gfortran build-essential",
    "pip install --upgrade pip wheel uv",
    "echo 'debconf debconf/frontend select Noninteractive' | debconf-set-selections",
}
_FROM_PYTHON = re.compile(r"^(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)(?:\.\d+)?(?:-[\w.-]+)?$")
_UV_COPY = re.compile(r"^ghcr\.io/astral-sh/uv(:[\w.-]+)?$")
_APT_INSTALL = re.compile(r"^(?:DEBIAN_FRONTEND=\S+\s+)?apt-get\s+install\s+(.*)$")
_PIP = re.compile(r"^(?:python3?\s+-m\s+pip|pip3?)\s+install\s+(.*)$")
_PYTHON_OPTION = re.compile(r"--python(?:=|\s+)(?:\$\(command -v python3?\)|\S+)")
_UV_PIP = re.compile(r"^(?:/\.uv/uv|uv)\s+pip\s+install\s+(.*)$")
# pip options uv accepts as they are, and the ones that take a value.
_PIP_FLAGS_SAME = {
    "--upgrade", "-U", "--no-deps", "--pre", "--no-build-isolation", "--compile-bytecode", "--compile",
    "--quiet", "-q", "--no-cache-dir", "--no-cache", "--system", "--force-reinstall", "--no-binary",
    "--only-binary", "--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--requirement", "-r",
    "--constraint", "-c", "--editable", "-e", "--python", "--index-strategy", "--prerelease", "--no-index",
}  # fmt: skip
_PIP_DROP = {"--no-cache-dir", "--no-cache", "--system", "--compile"}


def uv_accepts(args: list[str]) -> bool:
    """Whether uv takes these pip install arguments as they are (else the install runs with pip)."""
    return all(w.split("=", 1)[0] in _PIP_FLAGS_SAME for w in args if w.startswith("-"))


def uv_install_argv(
    uv_bin: str, python: str, args: list[str], settings: dict[str, list[str]], uv: bool
) -> list[str]:
    """The uv command line of an install step: uv's own rules for uv_pip_install (`uv`), else pip's."""
    uv_args: list[str] = []
    for word in args:
        name = word.split("=", 1)[0]
        if name in _PIP_DROP:
            continue
        if name == "--pre" and not uv:
            uv_args += ["--prerelease", "allow"]
            continue
        uv_args.append(word)
    machine = pipconf.uv_options(settings, uv_args, pip_semantics=not uv)
    # Bytecode compiled now, as pip does: containers see the environment read-only.
    compile_ = [] if "--compile-bytecode" in uv_args else ["--compile-bytecode"]
    return [uv_bin, "pip", "install", "--python", python, *compile_, *machine, *uv_args]


def _missing_apt_packages(packages: list[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return packages
    missing = []
    for package in packages:
        name = package.split("=", 1)[0]
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in out.stdout:
            missing.append(name)
    return missing


class ProcessBuilder:
    """Image layers as directories in the data dir: `venv/` (the image's Python environment) and config."""

    name = "process"

    def __init__(
        self,
        root: Path,
        pythons: PythonFinder,
        sandbox: Support | None = None,
        hidden: list[Path] | None = None,
    ) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._pythons = pythons
        self._sandbox = sandbox or Support("none", "not probed")
        self._hidden = hidden or []

    async def build(self, job: BuildJob, log: LogFn) -> ImageConfig:
        # A dir per build: a rebuild (force_build) never changes files under running containers or spares.
        layer = self._root / f"{job.content_hash[:32]}-{os.urandom(4).hex()}"
        layer.mkdir(parents=True)
        try:
            build = _LayerBuild(job, layer, self._pythons, log)
            build.sandbox, build.hidden, build.runner = self._sandbox, self._hidden, job.runner
            return await build.run()
        except BaseException:
            await asyncio.to_thread(_remove, layer)
            raise


def _remove(path: Path) -> None:
    """Remove a layer dir; overlay whiteouts and read-only dirs included."""
    if path.exists():
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(path, ignore_errors=True)


class _LayerBuild:
    sandbox: Support
    hidden: list[Path]
    runner: FunctionRunner | None

    def __init__(self, job: BuildJob, layer: Path, pythons: PythonFinder, log: LogFn) -> None:
        self.job = job
        self.layer = layer
        self.rootfs = layer / "rootfs"  # the layer's files, at their paths in the image
        self.pythons = pythons
        self.log = log
        self.steps = 0
        self._context: Path | None = None
        self.config = replace(job.parent) if job.parent is not None else ImageConfig()
        self.config.env = dict(self.config.env)
        self.args: dict[str, str] = {}
        self.own_venv = False

    async def run(self) -> ImageConfig:
        if self.job.build_function is not None:
            await self.run_function(self.job.build_function)
        instructions = self.job.instructions
        if self.job.parent is None:
            if not instructions or instructions[0].keyword != "FROM":
                raise BuildFailed("The first command of an image must be FROM")
        for index, instruction in enumerate(instructions):
            self.log(f"#{index + 1} {instruction.line}\n")
            await self.step(instruction, first=index == 0)
        if self.rootfs.exists() and any(self.rootfs.iterdir()):
            self.config.layers = [*self.config.layers, str(self.rootfs)]
        (self.layer / ".ready").touch()
        return self.config

    def variables(self) -> dict[str, str]:
        values = {"PATH": DEFAULT_PATH, **self.args, **self.config.env}
        values.update({k: v for k, v in self.job.build_args.items() if k in self.args})
        return values

    async def step(self, ins: Instruction, first: bool) -> None:
        kw = ins.keyword
        if kw == "FROM":
            await self.from_(ins, first)
        elif kw == "RUN":
            await self.run_command(ins)
        elif kw == "ENV":
            for pair in ins.args:
                key, value = dockerfile.split_pair(pair)
                self.config.env[key] = dockerfile.expand(value, self.variables())
        elif kw == "ARG":
            for pair in ins.args:
                key, value = dockerfile.split_pair(pair)
                self.args[key] = self.job.build_args.get(key, value)
        elif kw == "WORKDIR":
            path = dockerfile.expand(ins.text, self.variables())
            self.config.workdir = os.path.normpath(os.path.join(self.config.workdir or "/", path))
            if self.config.workdir != "/root":
                # Docker makes the WORKDIR; here it is made in the layer, where containers will find it.
                (self.rootfs / self.config.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif kw == "CMD":
            self.config.cmd = ins.args if ins.exec_form else [*self.config.shell, ins.text]
        elif kw == "ENTRYPOINT":
            self.config.entrypoint = ins.args if ins.exec_form else [*self.config.shell, ins.text]
        elif kw == "SHELL":
            self.config.shell = ins.args
        elif kw == "USER":
            self.config.user = ins.text
        elif kw in ("LABEL", "EXPOSE"):
            self.log(f"note: {kw} is recorded nowhere on this runtime\n")
        elif kw in ("COPY", "ADD"):
            await self.copy(ins)
        else:  # pragma: no cover - the parser admits no other keyword
            raise BuildFailed(f"Unsupported instruction {ins.line}")

    async def from_(self, ins: Instruction, first: bool) -> None:
        ref = ins.args[0]
        if self.job.parent is not None:
            if not first or ref != "base":
                raise BuildFailed(f"'{ins.line}': a layer on a base image starts with 'FROM base'")
            return
        if not first:
            raise BuildFailed(f"'{ins.line}': multi-stage builds are not supported")
        match = _FROM_PYTHON.match(ref)
        if match is None:
            raise BuildFailed(
                f"Base image '{ref}' cannot be used by the process runtime, which runs containers on this "
                "host's system and Python interpreters: start from Image.debian_slim(python_version=...), or "
                "run the server with --runtime docker to use registry images."
            )
        minor = f"{match.group(1)}.{match.group(2)}"
        python, version = await asyncio.to_thread(self.pythons.find, minor)
        self.log(f"using the host's Python {version} ({python}) for {ref}\n")
        # The server's own interpreter is the default image: containers then run in the server's environment.
        self.config.python = "" if version == host_python_version() else python
        self.config.python_version = version

    # ---------------------------------------------------------------- RUN
    async def run_command(self, ins: Instruction) -> None:
        if ins.exec_form:
            command = shlex.join(ins.args)
        else:
            command = ins.text
        normalized = " ".join(command.split())
        if normalized in _BASE_SETUP:
            self.log("provided by the host\n")
            return
        if normalized == "apt-get update":
            self.log("the process runtime uses the host's system packages; nothing to update\n")
            return
        apt = _APT_INSTALL.match(normalized)
        if apt is not None:
            return self.apt(ins, apt.group(1))
        pip = _PIP.match(normalized)
        uv = _UV_PIP.match(normalized)
        if pip is not None or uv is not None:
            rest = (pip or uv).group(1)  # type: ignore[union-attr]
            rest = _PYTHON_OPTION.sub(" ", rest)  # uv_pip_install names the image's python: this layer's venv
            return await self.pip(ins, shlex.split(rest), uv=uv is not None)
        await self.run_sandboxed(ins, [*self.config.shell, command] if not ins.exec_form else ins.args)

    async def run_function(self, build: BuildFunction) -> None:
        if not self.sandbox.available:
            raise BuildFailed(
                f"Image.run_function needs Linux namespaces, and this host has none: {self.sandbox.reason}"
            )
        if self.runner is None or not build.function_id:
            raise BuildFailed("Image.run_function: the build function was not created")
        self.rootfs.mkdir(exist_ok=True)
        await self.runner.run(build.function_id, build.input, self.log, target=BuildUpper(self.rootfs))

    async def run_sandboxed(self, ins: Instruction, argv: list[str]) -> None:
        """A RUN command in a BUILD-mode sandbox: what it writes becomes this layer's files."""
        if not self.sandbox.available:
            raise BuildFailed(
                f"'{ins.line}': running commands in image builds needs Linux namespaces, and this host has "
                f"none ({self.sandbox.reason}). pip/uv installs, apt packages already on the host, ENV, "
                "WORKDIR and CMD work without them; or use --runtime docker."
            )
        python = await self.ensure_venv()  # `python` and `pip` in the command are the image's
        venv = Path(python).parent.parent
        binds = [Bind(venv, str(venv), writable=True), *interpreter_binds(python, self.hidden)]
        env = {**self.job.secret_env, **self.variables()}
        self.rootfs.mkdir(exist_ok=True)
        self.steps += 1
        scratch = self.layer / f"scratch-{self.steps}"
        workdir = self.config.workdir or "/"
        wrapper = ["/bin/sh", "-c", 'mkdir -p "$1" && cd "$1" && shift && exec "$@"', "sh", workdir, *argv]
        layers = [Path(layer) for layer in self.config.layers]  # the base image's files (this layer's: upper)
        spec = SandboxSpec(
            layers=layers, upper=self.rootfs, binds=binds, workdir="/", env=env, hidden=self.hidden
        )
        try:
            full = await asyncio.to_thread(sandbox.command, spec, wrapper, scratch)
        except SandboxError as exc:
            raise BuildFailed(f"'{ins.line}': could not set up the build sandbox: {exc}") from None
        try:
            await self.exec(full, ins.line)
        finally:
            await asyncio.to_thread(sandbox.cleanup, scratch)

    def apt(self, ins: Instruction, rest: str) -> None:
        packages = [w for w in shlex.split(rest) if not w.startswith("-")]
        missing = _missing_apt_packages(packages)
        if missing:
            names = ", ".join(missing)
            raise BuildFailed(
                f"'{ins.line}': apt package{'s' if len(missing) > 1 else ''} {names} "
                f"{'are' if len(missing) > 1 else 'is'} not installed on this host; the process runtime uses "
                f"the host's system packages: install {'them' if len(missing) > 1 else 'it'}, or use "
                "--runtime docker"
            )
        self.log(f"installed on the host: {', '.join(packages)}\n")

    async def ensure_venv(self) -> str:
        """This layer's own environment: a new venv on the base interpreter, or a copy of the parent's."""
        venv = self.layer / "venv"
        if self.own_venv:
            return str(venv / "bin" / "python")
        if not self.config.python_version:
            raise BuildFailed("The image has no Python interpreter (its base layer did not set one)")
        parent_python = self.config.python or getattr(sys, "_base_executable", sys.executable)
        parent_venv = Path(parent_python).parent.parent
        if (parent_venv / "pyvenv.cfg").exists():
            # Hard links: uv replaces files rather than writing into them, so the parent stays intact.
            await asyncio.to_thread(shutil.copytree, parent_venv, venv, symlinks=True, copy_function=os.link)
        else:
            argv = [uv_binary(), "venv", "--quiet", "--seed", "--relocatable", "--python", parent_python]
            await self.exec([*argv, str(venv)], "create the image's virtual environment")
        self.own_venv = True
        python = str(venv / "bin" / "python")
        self.config.python = python
        self.config.env["VIRTUAL_ENV"] = str(venv)
        path = self.config.env.get("PATH", DEFAULT_PATH)
        bin_dir = str(venv / "bin")
        parts = [p for p in path.split(":") if not p.endswith("/venv/bin") or p == bin_dir]
        self.config.env["PATH"] = ":".join([bin_dir, *[p for p in parts if p != bin_dir]])
        return python

    async def pip(self, ins: Instruction, words: list[str], uv: bool) -> None:
        python = await self.ensure_venv()
        # A context file the command names (pip_install_from_requirements: -r /.requirements.txt) is read
        # from the build context.
        inline = {name.lstrip("/") for name in self.job.context_files}
        args: list[str] = []
        for word in words:
            if word.startswith("/") and word.lstrip("/") in inline:
                word = str(await self.context() / word.lstrip("/"))
            args.append(word)
        if uv or uv_accepts(args):
            # The machine's pip settings (a local wheel cache, mirrors, constraints) apply to uv too.
            settings = await asyncio.to_thread(pipconf.pip_settings)
            argv = uv_install_argv(uv_binary(), python, args, settings, uv=uv)
            extra_env = pipconf.uv_env(settings)
        else:
            argv = [python, "-m", "pip", "install", *args]
            extra_env = {}
        await self.exec(argv, ins.line, extra_env)

    async def context(self) -> Path:
        """The build context (inline files and the context mount) as one dir, laid out once per layer."""
        if self._context is None:
            self._context = await asyncio.to_thread(
                context_dir.assemble, self.layer / "context", self.job.context_files, self.job.context_dir
            )
        return self._context

    async def copy(self, ins: Instruction) -> None:
        source_image = ins.flags.get("from", "")
        if source_image and _UV_COPY.match(source_image):
            self.log("uv is provided by the host\n")
            return
        if source_image:
            raise BuildFailed(
                f"'{ins.line}': COPY --from another image is not supported by the process runtime"
            )
        sources = ins.args[:-1]
        dest = dockerfile.expand(ins.args[-1], self.variables())
        if ins.flags.get("chown"):
            self.log(
                "note: --chown is not applied by the process runtime (files belong to the server's user)\n"
            )
        context = await self.context()
        placed = await asyncio.to_thread(
            context_dir.copy_into,
            self.rootfs,
            context,
            sources,
            dest,
            self.config.workdir,
            add=ins.keyword == "ADD",
            chmod=ins.flags.get("chmod", ""),
        )
        self.log(f"placed {', '.join(placed[:5])}{' ...' if len(placed) > 5 else ''}\n")

    async def exec(self, argv: list[str], what: str, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **(extra_env or {})}
        env.update(self.job.secret_env)
        env.update({k: v for k, v in self.config.env.items() if k != "PATH"})
        env["PATH"] = self.config.env.get("PATH", os.environ.get("PATH", DEFAULT_PATH))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=str(self.layer),
            start_new_session=True,
        )
        assert proc.stdout is not None
        tail: list[str] = []
        try:
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                text = line.decode(errors="replace")
                self.log(text)
                tail = [*tail[-39:], text]
            rc = await proc.wait()
        except BaseException:  # cancelled (the server stops): the build step must not outlive it
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if rc != 0:
            raise BuildFailed(f"'{what}' failed with exit code {rc}. The end of its output:\n{''.join(tail)}")
