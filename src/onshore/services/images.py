"""Images: recognise what the process runtime can honour today, refuse the rest with a clear reason."""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field

from onshore import ids
from onshore.models import ImageRecord
from onshore.services.clock import Clock
from onshore.store.base import ImageStore

# Commands of the client's default image (and of Image.debian_slim()) after its FROM line. The process
# runtime runs on the host's Python with the host's system packages, which stands for these layers.
_BASE_SETUP = {
    "RUN apt-get update",
    "RUN apt-get install -y gcc gfortran build-essential",
    "RUN pip install --upgrade pip wheel uv",
    "RUN echo 'debconf debconf/frontend select Noninteractive' | debconf-set-selections",
}
_FROM_PYTHON_SLIM = re.compile(r"^FROM python:(\d+)\.(\d+)(?:\.\d+)?-slim-(bookworm|bullseye|trixie)$")


@dataclass
class ImageLayer:
    dockerfile_commands: list[str]
    base_image_ids: list[str] = field(default_factory=list)
    context_files: int = 0
    has_build_function: bool = False
    gpu: bool = False
    secret_ids: list[str] = field(default_factory=list)
    builder_version: str = ""

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (*self.dockerfile_commands, "|", *self.base_image_ids, "|", str(self.context_files)):
            h.update(part.encode() + b"\0")
        h.update(f"{self.has_build_function}{self.gpu}{self.secret_ids}{self.builder_version}".encode())
        return h.hexdigest()


def host_python_version() -> str:
    return ".".join(str(p) for p in sys.version_info[:3])


class ImageService:
    def __init__(self, store: ImageStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def get_or_create(self, layer: ImageLayer) -> ImageRecord:
        content_hash = layer.content_hash()
        existing = self._store.find_image(content_hash)
        if existing is not None:
            return existing
        error = self._refusal(layer)
        record = ImageRecord(
            image_id=ids.new_id("image"),
            content_hash=content_hash,
            definition=b"",
            created_at=self._clock.now(),
            status="failed" if error else "ready",
            error=error,
            python_version=host_python_version(),
        )
        self._store.put_image(record)
        return record

    def get(self, image_id: str) -> ImageRecord | None:
        return self._store.get_image(image_id)

    def _refusal(self, layer: ImageLayer) -> str:
        """Why this layer cannot be honoured on the process runtime, or '' when it can."""
        later = "custom image layers are not built by Onshore yet (the images feature is planned)"
        if layer.base_image_ids:
            extra = [c for c in layer.dockerfile_commands if c.strip() != "FROM base"]
            shown = "; ".join(extra[:3]) or "a layer on top of another image"
            return (
                f"This image adds layers to its base ({shown}): {later}. Only the default image runs today."
            )
        if layer.has_build_function:
            return f"Image.run_function is not supported: {later}."
        if layer.context_files:
            return f"Images with copied local files (copy=True) are not supported: {later}."
        commands = [c.strip() for c in layer.dockerfile_commands if c.strip()]
        if not commands:
            return "The image has no Dockerfile commands."
        match = _FROM_PYTHON_SLIM.match(commands[0])
        if match is None:
            return f"Base image '{commands[0]}' is not supported: {later}. Only the default image runs today."
        wanted = (int(match.group(1)), int(match.group(2)))
        if wanted != sys.version_info[:2]:
            have = f"{sys.version_info[0]}.{sys.version_info[1]}"
            return (
                f"The image asks for Python {wanted[0]}.{wanted[1]}, but the process runtime runs containers "
                f"on the server's Python {have}; use python_version='{have}' (other versions come with the "
                "images feature)."
            )
        for command in commands[1:]:
            if command in _BASE_SETUP or command.startswith("CMD "):
                continue
            return f"Image command '{command}' is not supported: {later}."
        return ""
