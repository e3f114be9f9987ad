"""Server settings and the data directory layout."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 50051
RUNTIMES = ("process", "docker")
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
    app_heartbeat_timeout: float = 60.0
    container_stop_grace: float = 5.0

    def resolved_max_containers(self) -> int:
        if self.max_containers > 0:
            return self.max_containers
        return max(8, 4 * (os.cpu_count() or 2))


class DataDir:
    """Files the server keeps in its data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

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
        if not path.exists():
            path.write_bytes(secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return path.read_bytes()

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None
