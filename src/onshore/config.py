"""Server settings and the data directory layout."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 50051
DEFAULT_DOCKER_NETWORK = "bridge"


def default_data_dir() -> Path:
    if os.environ.get("ONSHORE_HOME"):
        return Path(os.environ["ONSHORE_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "onshore"


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    http_port: int = 0  # 0: port + 1
    runtime: str = "process"  # "process" or "docker"
    docker_host: str = ""  # the docker runtime's engine URL; "": DOCKER_HOST, else the local default
    docker_network: str = DEFAULT_DOCKER_NETWORK  # the Docker network containers join
    max_containers: int = 0  # 0: derived from the CPU count
    # The process runtime's containers: "auto" isolates them (namespaces) where the host allows it; "none"
    # runs them as plain subprocesses, as on a host without namespaces.
    isolation: str = "auto"
    # Web endpoints are also served by Host header: <label>.<web_domain> ("localhost": *.localhost in a
    # browser; a wildcard DNS name behind a reverse proxy). "" serves them by path only.
    web_domain: str = "localhost"
    public_url: str = (
        ""  # the HTTP port as others reach it, for the URLs handed out; "": http://host:http_port
    )
    # An emulated GPU inventory ("T4:1,H100:2"): placement as with real GPUs, without devices. "": NVML's.
    gpus: str = ""
    # A GPU type the server lacks: "closest" runs on the closest one with at least its memory (logged);
    # "strict" refuses the function instead.
    gpu_fallback: str = "closest"
    app_heartbeat_timeout: float = 60.0
    container_stop_grace: float = 5.0

    def resolved_max_containers(self) -> int:
        if self.max_containers > 0:
            return self.max_containers
        return max(8, 4 * (os.cpu_count() or 2))


class DataDirError(Exception):
    """The data directory cannot be used; the message names the path and the cause, on one line."""


def private_dir(path: Path) -> None:
    """Make the directory (and missing parents) owner-only whatever the umask; else DataDirError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise DataDirError(_cannot_use(path, exc)) from None


def _cannot_use(path: Path, exc: OSError) -> str:
    where = exc.filename if isinstance(exc.filename, str) else str(path)
    return f"Cannot use the data directory {path}: {where}: {exc.strerror or exc}"


class DataDir:
    """Files the server keeps in its data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        """Create the directory owner-only and check it takes writes; DataDirError (path and cause) if not."""
        private_dir(self.root)
        probe = self.root / f".write-test.{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"onshore")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            raise DataDirError(_cannot_use(self.root, exc)) from None

    @property
    def database(self) -> Path:
        return self.root / "onshore.db"

    @property
    def server_file(self) -> Path:
        return self.root / "server.json"

    @property
    def token_file(self) -> Path:
        return self.root / "token.json"

    def blob_key(self) -> bytes:
        path = self.root / "blob.key"
        try:
            if not path.exists():
                self._write_private(path, secrets.token_bytes(32))
            return path.read_bytes()
        except OSError as exc:
            raise DataDirError(_cannot_use(self.root, exc)) from None

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        try:
            self._write_private(path, json.dumps(data, indent=2).encode())
        except OSError as exc:
            raise DataDirError(_cannot_use(self.root, exc)) from None

    @staticmethod
    def _write_private(path: Path, data: bytes) -> None:
        """Write the file owner-only (0600 from its creation), atomically: a failure leaves no partial one."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None
