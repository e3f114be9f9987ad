"""The filesystem of a sandboxed process container: image layers, the code at /root, the client at /pkg."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from onshore.models import ImageConfig
from onshore.runtimes.base import ARGS_TARGET, PKG_TARGET
from onshore.runtimes.process.sandbox import Bind, SandboxSpec

# Where a container finds the server's socket and its ContainerArguments file.
SOCKET_TARGET = "/onshore/api.sock"
SPARE_IO = "/onshore/io"  # a spare's own dir for the files of the container it becomes


@dataclass(frozen=True)
class BuildUpper:
    """ContainerSpec.image_build of an Image.run_function container: every filesystem write lands in `path`,
    which becomes the image layer."""

    path: Path


def _is_under(path: Path, parents: list[Path]) -> bool:
    return any(path == p or p in path.parents for p in parents)


# A sandbox has its own /tmp: host paths there (a project checked out in /tmp, say) are shown only if bound.
_PRIVATE = [Path("/tmp")]


def _unseen(path: Path, hidden: list[Path]) -> bool:
    """Whether a host path is invisible in a sandbox unless bound: it lies in a hidden or private dir."""
    return _is_under(path, [*hidden, *_PRIVATE])


def interpreter_prefix(python: str) -> Path:
    """The installation an interpreter (or a venv's interpreter) runs from."""
    venv = Path(python).parent.parent
    cfg = venv / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(os.path.realpath(value.strip())).parent
    return Path(os.path.realpath(python)).parent.parent


def interpreter_binds(python: str, hidden: list[Path]) -> list[Bind]:
    """The installation of an interpreter, shown where it is when it lies in a hidden dir (e.g. ~/.pyenv)."""
    prefix = Path(os.path.realpath(interpreter_prefix(python)))
    return [Bind(prefix, str(prefix))] if _unseen(prefix, hidden) else []


@dataclass
class ContainerLayout:
    """What one container's sandbox is made of; `spec()` turns it into the sandbox's spec."""

    image: ImageConfig
    python: str  # the interpreter the container runs
    code_dir: Path | None  # a layer-shaped dir's `root/`: the user's files for /root (None: a spare's)
    args_path: Path | None  # None: a spare's (the server writes them into its io dir later)
    pkg_folder: Path | None  # `<folder>` holding `pkg/modal`; None when the interpreter has the client
    hidden: list[Path]  # host paths a container must not see (the data dir, the user's home)
    # A spare: its own host dirs shown writable at /root and SPARE_IO, filled when a container takes it.
    spare_dirs: tuple[Path, Path] | None = None

    def spec(self, env: dict[str, str], cgroup_procs: list[Path]) -> SandboxSpec:
        binds: list[Bind] = []
        seen: set[str] = set()

        def bind_back(path: Path) -> None:
            """A host path the container needs that lies in a hidden dir: shown read-only where it is."""
            real = Path(os.path.realpath(path))
            if _unseen(real, self.hidden) and str(real) not in seen:
                seen.add(str(real))
                binds.append(Bind(real, str(real)))

        env = dict(env)
        bind_back(interpreter_prefix(self.python))
        venv = Path(self.python).parent.parent
        if (venv / "pyvenv.cfg").exists():
            bind_back(venv)
        python_path = []
        if self.pkg_folder is not None:
            binds.append(Bind(self.pkg_folder / "pkg", PKG_TARGET))
            python_path.append(PKG_TARGET)
        if self.spare_dirs is not None:
            root, io = self.spare_dirs
            binds += [Bind(root, "/root", writable=True), Bind(io, SPARE_IO, writable=True)]
            env["MODAL_CONTAINER_ARGUMENTS_PATH"] = f"{SPARE_IO}/args"
        elif self.args_path is not None:
            binds.append(Bind(self.args_path, ARGS_TARGET))
            env["MODAL_CONTAINER_ARGUMENTS_PATH"] = ARGS_TARGET
        server_url = env.get("MODAL_SERVER_URL", "")
        if server_url.startswith("unix://"):
            binds.append(Bind(Path(server_url[len("unix://") :]), SOCKET_TARGET))
            env["MODAL_SERVER_URL"] = f"unix://{SOCKET_TARGET}"
        workdir = self.image.workdir or "/root"
        if workdir != "/root":
            python_path.append("/root")  # the user's code stays importable from another workdir
        if python_path:
            env["PYTHONPATH"] = ":".join(python_path)
        else:
            env.pop("PYTHONPATH", None)
        env.setdefault("HOME", "/root")
        return SandboxSpec(
            layers=[
                *(Path(layer) for layer in self.image.layers),
                *([self.code_dir.parent] if self.code_dir is not None else []),
            ],
            binds=binds,
            workdir=workdir,
            env=env,
            hidden=list(self.hidden),
            cgroup_procs=cgroup_procs,
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _hides(path: Path) -> str:
    """'whiteout' (a 0/0 character device: deleted below), 'opaque' (a dir replacing the one below), or ''."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "whiteout"
    if stat.S_ISDIR(st.st_mode):
        for name in ("user.overlay.opaque", "trusted.overlay.opaque"):
            try:
                if os.getxattr(path, name, follow_symlinks=False) == b"y":
                    return "opaque"
            except OSError:
                continue
    return ""


def _copy_over(src: Path, dest: Path) -> None:
    """Put the entries of one layer's dir over dest, as an overlay would show them."""
    with os.scandir(src) as entries:
        for entry in entries:
            source, target = Path(entry.path), dest / entry.name
            hides = _hides(source)
            if hides == "whiteout":
                _remove(target)
            elif entry.is_dir(follow_symlinks=False):
                if hides == "opaque" or not target.is_dir() or target.is_symlink():
                    _remove(target)
                target.mkdir(exist_ok=True)
                shutil.copystat(source, target)
                _copy_over(source, target)
            else:
                _remove(target)
                if entry.is_symlink():
                    os.symlink(os.readlink(source), target)
                else:
                    shutil.copy2(source, target)


def merge_layers(layers: list[Path], directory: str, dest: Path) -> None:
    """Copy into `dest` what these overlay layers (bottom first) show at /`directory` (e.g. "root"):
    later layers win, a whiteout deletes what is below, an opaque dir replaces it."""
    for layer in layers:
        source = layer / directory
        hides = _hides(source)
        if hides:
            for child in list(dest.iterdir()):
                _remove(child)
        if source.is_dir() and not source.is_symlink():
            _copy_over(source, dest)
