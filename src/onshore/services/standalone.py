"""python-build-standalone mounts: the named mounts `from_registry(add_python=...)` copies Python from."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from onshore import ids
from onshore.archives import extract_data
from onshore.errors import InvalidArgument, NotFound, Unimplemented
from onshore.models import Mount, MountFile
from onshore.services.mounts import MountService

log = logging.getLogger("onshore.standalone")

MOUNT_PREFIX = "python-build-standalone."
MIRROR_ENV = "ONSHORE_PYTHON_STANDALONE_MIRROR"
DEFAULT_MIRROR = "https://github.com/astral-sh/python-build-standalone/releases/download"
CHECKSUMS_ASSET = "SHA256SUMS"
FETCH_TIMEOUT = 60.0  # seconds without progress before a download is given up
_MAX_CHECKSUMS_BYTES = 8 * 1024**2
_CHUNK = 1024**2
_NAME = re.compile(
    r"^python-build-standalone\.(?P<release>\d{8})\."
    r"(?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)(?P<freethreaded>t?)-(?P<libc>[a-z0-9]+)$"
)
_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_USE = "Python for Image.from_registry(..., add_python=...)"


class StandaloneUnavailable(NotFound):
    """The python-build-standalone mount cannot be provided; the message names the mount, the URL and the
    mirror setting."""


class _Absent(Exception):
    """The URL names nothing: HTTP 404, or no such file."""


@dataclass(frozen=True)
class Distribution:
    """The python-build-standalone build one mount name stands for, on this host's architecture."""

    name: str  # the mount name, e.g. python-build-standalone.20230826.3.11.5-gnu
    release: str  # e.g. 20230826
    version: str  # e.g. 3.11.5
    freethreaded: bool
    libc: str
    arch: str  # x86_64 or aarch64

    @property
    def asset(self) -> str:
        """The release asset holding this build: its "install_only" tarball."""
        flavor = "freethreaded-install_only" if self.freethreaded else "install_only"
        return f"cpython-{self.version}+{self.release}-{self.arch}-unknown-linux-{self.libc}-{flavor}.tar.gz"


def is_standalone_name(name: str) -> bool:
    return name.startswith(MOUNT_PREFIX)


def host_arch(machine: str | None = None) -> str:
    """python-build-standalone's name for the architecture of this host (or of `machine`)."""
    raw = (machine or platform.machine()).lower()
    if raw not in _ARCHES:
        raise Unimplemented(
            f"python-build-standalone mounts ({_USE}) are provided on x86_64 and aarch64 Linux hosts, "
            f"and this host is {raw or 'of an unknown architecture'}"
        )
    return _ARCHES[raw]


def parse_name(name: str, machine: str | None = None) -> Distribution:
    """The build a mount name of the modal client (python_standalone_mount_name) stands for."""
    match = _NAME.match(name)
    if match is None:
        raise InvalidArgument(
            f"Mount '{name}' is not a python-build-standalone mount name: those read "
            "python-build-standalone.<release>.<version>-gnu, "
            "e.g. python-build-standalone.20230826.3.11.5-gnu"
        )
    if match["libc"] != "gnu":
        raise InvalidArgument(
            f"Mount '{name}': only glibc builds of python-build-standalone ('-gnu') are provided, "
            f"not '-{match['libc']}'"
        )
    return Distribution(
        name, match["release"], match["version"], bool(match["freethreaded"]), "gnu", host_arch(machine)
    )


def mirror_base(value: str | None = None) -> str:
    """The base URL release assets are fetched under: `value`, else $ONSHORE_PYTHON_STANDALONE_MIRROR, else
    the project's GitHub releases. A path without a scheme stands for a file:// directory."""
    raw = (value if value is not None else os.environ.get(MIRROR_ENV, "")).strip()
    if not raw:
        return DEFAULT_MIRROR
    if "://" not in raw:
        return Path(raw).expanduser().resolve().as_uri()
    return raw.rstrip("/")


def asset_url(base: str, release: str, filename: str) -> str:
    """Where a release's asset lies under a mirror laid out as <base>/<release>/<filename>."""
    return f"{base.rstrip('/')}/{quote(release)}/{quote(filename)}"


def process_runtime_refusal(name: str) -> str:
    """Why the process runtime does not provide this mount."""
    return (
        f"Mount '{name}' is the {_USE}, which the process runtime cannot use: it runs no registry images. "
        "Start the server with --runtime docker to use Image.from_registry."
    )


def _open(url: str) -> IO[bytes]:
    """The URL's content; _Absent where it names nothing, OSError where it cannot be fetched."""
    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=FETCH_TIMEOUT)
        return response
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _Absent(url) from None
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):
            raise _Absent(url) from None
        raise OSError(str(exc.reason)) from None
    except ValueError as exc:  # not a URL urllib can open
        raise OSError(str(exc)) from None


def parse_checksums(text: str, filename: str) -> str:
    """The sha256 a SHA256SUMS (or <asset>.sha256) file gives for `filename`, or ""."""
    lines = text.split("\n")
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[-1].lstrip("*") == filename and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            return parts[0]
    words = text.split()
    if len(words) == 1 and re.fullmatch(r"[0-9a-f]{64}", words[0]):
        return words[0]  # a .sha256 file holding the digest alone
    return ""


def tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to root, regular file holding its content) for each file under root.

    Mounts hold regular files only: a symlink (bin/python3 -> python3.11) becomes a copy of what it points
    to, a link to a directory the files under it. Links that leave root, dangle or loop are left out.
    """
    top = root.resolve()

    def walk(directory: Path, prefix: str, chain: frozenset[Path]) -> Iterator[tuple[str, Path]]:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if target != top and top not in target.parents:
                    log.warning("python-build-standalone: leaving out %s, a link out of the tree", rel)
                    continue
                path = target
            if path.is_dir():
                real = path.resolve()
                if real in chain:
                    log.warning("python-build-standalone: leaving out %s, a link loop", rel)
                    continue
                yield from walk(path, rel + "/", chain | {real})
            elif path.is_file():
                yield rel, path
            else:
                log.warning("python-build-standalone: leaving out %s, not a regular file", rel)

    yield from walk(top, "", frozenset({top}))


class StandalonePythons:
    """Provides the python-build-standalone mounts: each fetched once from the mirror, verified against the
    release's published sha256, unpacked into the mount file store, and kept under its name across restarts.

    cache_dir holds the verified tarballs (<release>/<asset>) and a record per mount name ("<name>.json")."""

    def __init__(
        self, mounts: MountService, cache_dir: Path, mirror: str | None = None, machine: str | None = None
    ) -> None:
        self._mounts = mounts
        self._cache = cache_dir
        self._mirror = mirror_base(mirror)
        self._machine = machine
        self._known: dict[str, Mount] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def mount(self, name: str, namespace: int = 0) -> Mount:
        """The mount named `name`, made on first use. Raises StandaloneUnavailable (NOT_FOUND) naming the
        URL tried and the mirror setting where the build cannot be fetched."""
        dist = parse_name(name, self._machine)
        known = self._known.get(name)
        if known is not None:
            return known
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name not in self._known:
                self._known[name] = await asyncio.to_thread(self._provide, dist, namespace)
        return self._known[name]

    def _provide(self, dist: Distribution, namespace: int) -> Mount:
        record_path = self._cache / f"{dist.name}.json"
        try:
            record = json.loads(record_path.read_text())
            if record.get("asset") == dist.asset:
                return self._mounts.get(str(record["mount_id"]))
        except (OSError, ValueError, KeyError, NotFound):
            pass  # no record, or its mount is gone: make it again
        tarball = self._tarball(dist)
        files = self._store(dist, tarball)
        mount = self._mounts.create(files, "", dist.name, namespace)
        record = {"asset": dist.asset, "mount_id": mount.mount_id, "files": len(files)}
        tmp = record_path.with_suffix(f".{ids.new_secret()[-8:]}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, record_path)
        log.info("python-build-standalone mount %s: %d files (%s)", dist.name, len(files), mount.mount_id)
        return mount

    # ------------------------------------------------------------------ fetching
    def _unavailable(self, dist: Distribution, url: str, why: str) -> StandaloneUnavailable:
        return StandaloneUnavailable(
            f"Mount '{dist.name}' (the {_USE}) is not available: {why} {url}. This server fetches "
            f"python-build-standalone release assets from {self._mirror}, as {MIRROR_ENV} says (default: "
            f"{DEFAULT_MIRROR}); point it at another base URL, or at a file:// directory laid out like the "
            f"release assets (<base>/<release>/<asset>), that holds {dist.asset}."
        )

    def _tarball(self, dist: Distribution) -> Path:
        """The verified tarball of this build in the cache, fetched if it is not there yet."""
        target = self._cache / dist.release / dist.asset
        if target.exists():
            return target
        url = asset_url(self._mirror, dist.release, dist.asset)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{ids.new_secret()[-8:]}.part")
        digest = hashlib.sha256()
        log.info("fetching python-build-standalone %s from %s", dist.name, url)
        try:
            with _open(url) as response, partial.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            expected, source = self._published_sha256(dist)
            if not expected:
                log.warning("no sha256 published for %s at %s: used unverified", dist.asset, self._mirror)
            elif expected != digest.hexdigest():
                got = digest.hexdigest()
                why = f"the sha256 {got} is not the {expected} that {source} gives for the file at"
                raise self._unavailable(dist, url, why)
            os.replace(partial, target)
        except _Absent:
            raise self._unavailable(dist, url, "there is no such release asset at") from None
        except OSError as exc:
            raise self._unavailable(dist, url, f"it could not be fetched ({exc}) from") from None
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _published_sha256(self, dist: Distribution) -> tuple[str, str]:
        """(sha256, the URL that gives it) from the release's SHA256SUMS, else the asset's .sha256 file;
        ("", "") where the release publishes neither."""
        for url in (
            asset_url(self._mirror, dist.release, CHECKSUMS_ASSET),
            asset_url(self._mirror, dist.release, dist.asset + ".sha256"),
        ):
            try:
                with _open(url) as response:
                    text = response.read(_MAX_CHECKSUMS_BYTES).decode(errors="replace")
            except _Absent:
                continue
            except OSError as exc:
                why = f"its checksum could not be fetched ({exc}) from"
                raise self._unavailable(dist, url, why) from None
            found = parse_checksums(text, dist.asset)
            if found:
                return found, url
        return "", ""

    # ------------------------------------------------------------------ unpacking
    def _store(self, dist: Distribution, tarball: Path) -> list[MountFile]:
        """The tarball's files put in the mount file store, as the mount lists them (under /python/...)."""
        work = self._cache / f"unpack-{os.getpid()}-{ids.new_secret()[-8:]}"
        try:
            try:
                with tarfile.open(tarball, "r:*") as archive:
                    extract_data(archive, work)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                tarball.unlink(missing_ok=True)  # fetched again next time
                raise StandaloneUnavailable(
                    f"Mount '{dist.name}': {tarball.name} is not a usable python-build-standalone archive "
                    f"({exc}); it was removed from {tarball.parent} and is fetched again on the next try"
                ) from None
            except OSError as exc:
                raise StandaloneUnavailable(
                    f"Mount '{dist.name}': {tarball} could not be unpacked into {work}: {exc}"
                ) from None
            if not (work / "python" / "bin").is_dir():
                tarball.unlink(missing_ok=True)
                raise StandaloneUnavailable(
                    f"Mount '{dist.name}': {tarball.name} is not laid out as an install_only build "
                    "(no python/bin in it)"
                )
            files: list[MountFile] = []
            for rel, path in tree_files(work / "python"):
                data = path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if self._mounts.missing([sha]):
                    self._mounts.put_file(sha, data)
                files.append(MountFile(f"/python/{rel}", sha, stat.S_IMODE(path.stat().st_mode) or 0o644))
            return files
        finally:
            shutil.rmtree(work, ignore_errors=True)
