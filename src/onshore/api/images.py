"""gRPC handlers for images: accept what the runtime can run, refuse the rest as a failed build."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import NotFound
from onshore.models import ImageRecord
from onshore.services.images import ImageLayer, ImageService

BUILDER_VERSION = "2025.06"


def _result(record: ImageRecord) -> Any:
    if record.status == "ready":
        return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
    return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=record.error)


def _metadata(record: ImageRecord) -> Any:
    return api_pb2.ImageMetadata(
        python_version_info=record.python_version, workdir="/root", image_builder_version=BUILDER_VERSION
    )


class ImageHandlers:
    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def ImageGetOrCreate(self, req: Any, who: Principal) -> Any:
        image = req.image
        layer = ImageLayer(
            dockerfile_commands=list(image.dockerfile_commands),
            base_image_ids=[b.image_id for b in image.base_images],
            context_files=len(image.context_files) + (1 if image.context_mount_id else 0),
            has_build_function=bool(image.build_function_def or image.HasField("build_function")),
            gpu=bool(image.gpu_config.count or image.gpu_config.gpu_type),
            secret_ids=list(image.secret_ids),
            builder_version=req.builder_version,
        )
        record = self._images.get_or_create(layer)
        return api_pb2.ImageGetOrCreateResponse(
            image_id=record.image_id, result=_result(record), metadata=_metadata(record)
        )

    async def ImageJoinStreaming(self, req: Any, who: Principal) -> AsyncIterator[Any]:
        record = self._images.get(req.image_id)
        if record is None:
            raise NotFound(f"Image {req.image_id} not found")
        yield api_pb2.ImageJoinStreamingResponse(result=_result(record), metadata=_metadata(record), eof=True)
