"""Test-only: stand-ins for registry images (the modal client's default base image, a Debian without Python),
made from Debian packages."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.docker.daemon import CACHE, Dockerd, DockerdUnavailable, unmount_under

RECIPE_LABEL = "org.onshore.test-standin-recipe"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Recipe:
    """How one stand-in is made: a debootstrap minbase with these packages, imported with these changes."""

    stem: str  # the cached tarball's name, less the version
    version: int  # bump when the recipe changes: the cached tarball's name and the image's label carry it
    label: str  # the image's RECIPE_LABEL value: an image without it is imported again
    packages: tuple[str, ...]
    changes: tuple[str, ...]
    python: bool  # `python`/`pip` on PATH in /usr/local, pip allowed into the system python

    def tarball(self) -> Path:
        return CACHE / f"{self.stem}-v{self.version}.tar"


# The image the modal client's default builder version starts from (Image.debian_slim's base).
DEFAULT_BASE_IMAGE = "python:3.11.12-slim-bookworm"
PYTHON_RECIPE = Recipe(
    stem=f"standin-debian-{SUITE}-python",
    version=1,
    label="1",
    packages=("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates"),
    # What the official image's config says, less what does not hold for Debian's python (its version).
    changes=(
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ),
    python=True,
)
# A registry image without Python, for Image.from_registry(..., add_python=...).
SLIM_IMAGE = "debian:bookworm-slim"
SLIM_RECIPE = Recipe(
    stem=f"standin-debian-{SUITE}-minbase",
    version=1,
    label="minbase-1",
    packages=(),
    changes=("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["bash"]'),
    python=False,
)
RECIPES = {DEFAULT_BASE_IMAGE: PYTHON_RECIPE, SLIM_IMAGE: SLIM_RECIPE}


def tarball_path(recipe: Recipe = PYTHON_RECIPE) -> Path:
    return recipe.tarball()


def ensure_tarball(recipe: Recipe = PYTHON_RECIPE) -> Path:
    """The stand-in's root filesystem as a tar, built once per machine (cached under CACHE)."""
    target = recipe.tarball()
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise DockerdUnavailable("no debootstrap to build the base image stand-in (bash .ci/setup-docker.sh)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "standin.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it: wait for it
        if target.exists():
            return target
        work = CACHE / f"standin-build-{os.getpid()}"
        try:
            _build(recipe, work / "rootfs", work / "debootstrap.log")
            partial = work / "rootfs.tar"
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(work / "rootfs"), "-cf", str(partial), "."],
                check=True,
                capture_output=True,
            )
            partial.rename(target)
        finally:
            left = unmount_under(work)
            if left:
                raise RuntimeError(f"debootstrap left mounts behind, not removing {work}: {left}")
            shutil.rmtree(work, ignore_errors=True)
    return target


def _build(recipe: Recipe, rootfs: Path, log_path: Path) -> None:
    rootfs.mkdir(parents=True)
    argv = ["debootstrap", "--variant=minbase"]
    if recipe.packages:
        argv.append(f"--include={','.join(recipe.packages)}")
    argv += [SUITE, str(rootfs), MIRROR]
    with log_path.open("wb") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
        raise DockerdUnavailable(f"debootstrap of {SUITE} from {MIRROR} failed ({rc}):\n{tail}")
    if recipe.python:
        # Like the official image: pip installs into the system python, `python`/`pip` on PATH in /usr/local.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        links = [("python", "python3"), ("python3", "python3"), ("pip", "pip3"), ("pip3", "pip3")]
        for name, target in links:
            link = rootfs / "usr/local/bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(f"/usr/bin/{target}")
    # Trust what the host trusts: where TLS to the package registries goes through a proxy with its own
    # CA, `pip install` in a build step needs it as much as the host does.
    if HOST_CA_BUNDLE.exists() and (rootfs / "etc/ssl/certs").is_dir():
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for junk in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()


def ensure_standin(daemon: Dockerd, tag: str = DEFAULT_BASE_IMAGE) -> str:
    """Make `tag` (a key of RECIPES) name its stand-in in the daemon's store (imported from the cached
    tarball if missing)."""
    recipe = RECIPES[tag]
    with docker.APIClient(base_url=daemon.url, version="auto", timeout=600) as api:
        try:
            info = api.inspect_image(tag)  # type: ignore[no-untyped-call]
            if (info["Config"].get("Labels") or {}).get(RECIPE_LABEL) == recipe.label:
                return tag
        except docker.errors.NotFound:
            pass
        repository, _, version = tag.rpartition(":")
        api.import_image_from_file(  # type: ignore[no-untyped-call]
            str(ensure_tarball(recipe)),
            repository=repository,
            tag=version,
            changes=[*recipe.changes, f"LABEL {RECIPE_LABEL}={recipe.label}"],
        )
        api.inspect_image(tag)  # type: ignore[no-untyped-call]
    return tag
