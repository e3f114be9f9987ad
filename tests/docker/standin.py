"""Test-only: a stand-in for the modal client's default base image, made from Debian packages."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import docker

from tests.docker.daemon import CACHE, Dockerd, DockerdUnavailable, unmount_under

# The image the modal client's default builder version starts from (Image.debian_slim's base).
DEFAULT_BASE_IMAGE = "python:3.11.12-slim-bookworm"
# Bump when the recipe below changes: the cached tarball's name carries it.
RECIPE_VERSION = 1
RECIPE_LABEL = "org.onshore.test-standin-recipe"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates"]
# What the official image's config says, less what does not hold for Debian's python (its version).
IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
    f"LABEL {RECIPE_LABEL}={RECIPE_VERSION}",
]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def tarball_path() -> Path:
    return CACHE / f"standin-debian-{SUITE}-python-v{RECIPE_VERSION}.tar"


def ensure_tarball() -> Path:
    """The stand-in's root filesystem as a tar, built once per machine (cached under CACHE)."""
    target = tarball_path()
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
            _build(work / "rootfs", work / "debootstrap.log")
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


def _build(rootfs: Path, log_path: Path) -> None:
    rootfs.mkdir(parents=True)
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR]
    with log_path.open("wb") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
        raise DockerdUnavailable(f"debootstrap of {SUITE} from {MIRROR} failed ({rc}):\n{tail}")
    # Like the official image: pip installs into the system python, `python`/`pip` on PATH in /usr/local.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for name, target in [("python", "python3"), ("python3", "python3"), ("pip", "pip3"), ("pip3", "pip3")]:
        link = rootfs / "usr/local/bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/{target}")
    # Trust what the host trusts: where TLS to the package registries goes through a proxy with its own
    # CA, `pip install` in a build step needs it as much as the host does.
    if HOST_CA_BUNDLE.exists():
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for junk in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()


def ensure_standin(daemon: Dockerd, tag: str = DEFAULT_BASE_IMAGE) -> str:
    """Make `tag` name the stand-in in the daemon's store (imported from the cached tarball if missing)."""
    with docker.APIClient(base_url=daemon.url, version="auto", timeout=600) as api:
        try:
            info = api.inspect_image(tag)  # type: ignore[no-untyped-call]
            if (info["Config"].get("Labels") or {}).get(RECIPE_LABEL) == str(RECIPE_VERSION):
                return tag
        except docker.errors.NotFound:
            pass
        repository, _, version = tag.rpartition(":")
        api.import_image_from_file(  # type: ignore[no-untyped-call]
            str(ensure_tarball()), repository=repository, tag=version, changes=IMAGE_CHANGES
        )
        api.inspect_image(tag)  # type: ignore[no-untyped-call]
    return tag
