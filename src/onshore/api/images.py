"""gRPC handlers for images: decode a layer, get or build it, stream its build to the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.images.model import BuildFunction, LayerRequest
from onshore.models import ImageRecord
from onshore.services.images import BUILDING, READY, ImageService

BUILDER_VERSION = "2025.06"


def _result(record: ImageRecord) -> api_pb2.GenericResult:
    if record.status == READY:
        return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
    return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=record.error)


def _metadata(record: ImageRecord) -> api_pb2.ImageMetadata:
    config = record.config
    return api_pb2.ImageMetadata(
        python_version_info=record.python_version,
        workdir=config.workdir if config is not None else "/root",
        image_builder_version=BUILDER_VERSION,
    )


def layer_request(req: api_pb2.ImageGetOrCreateRequest) -> LayerRequest:
    image = req.image
    build_function = None
    if req.build_function_id or image.HasField("build_function") or image.build_function_def:
        fn = image.build_function
        build_function = BuildFunction(
            function_id=req.build_function_id,
            definition=(fn.definition or image.build_function_def).encode(),
            globals=bytes(fn.globals or image.build_function_globals),
            input=fn.input.SerializeToString() if fn.HasField("input") else b"",
        )
    return LayerRequest(
        commands=list(image.dockerfile_commands),
        base_images=[(b.docker_tag, b.image_id) for b in image.base_images],
        context_files={f.filename: bytes(f.data) for f in image.context_files},
        context_mount_id=image.context_mount_id,
        build_function=build_function,
        secret_ids=list(image.secret_ids),
        build_args=dict(image.build_args),
        gpu=bool(image.gpu_config.count or image.gpu_config.gpu_type),
        registry_auth=bool(image.image_registry_config.registry_auth_type),
        volume_mounts=len(image.volume_mounts),
        force_build=bool(req.force_build),
        builder_version=req.builder_version,
        app_id=req.app_id,
    )


class ImageHandlers:
    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def ImageGetOrCreate(
        self, req: api_pb2.ImageGetOrCreateRequest, who: Principal
    ) -> api_pb2.ImageGetOrCreateResponse:
        request = layer_request(req)
        if who.is_container:
            # A build that names secrets (or runs a function, which gets its own) hands their values to
            # whatever the build runs: only a client's token may ask for one.
            if request.secret_ids or request.build_function is not None:
                who.require_client("build an image with secrets or Image.run_function")
            who.require_app(request.app_id)  # its own app's build: one with no app is refused too
        record = self._images.get_or_create(request)
        response = api_pb2.ImageGetOrCreateResponse(image_id=record.image_id)
        if record.status != BUILDING:  # a finished build (cache hit or failure) answers at once
            response.result.CopyFrom(_result(record))
            response.metadata.CopyFrom(_metadata(record))
        return response

    async def ImageJoinStreaming(
        self, req: api_pb2.ImageJoinStreamingRequest, who: Principal
    ) -> AsyncIterator[api_pb2.ImageJoinStreamingResponse]:
        async for update in self._images.join(req.image_id, req.last_entry_id, req.timeout):
            response = api_pb2.ImageJoinStreamingResponse()
            for entry in update.entries:
                response.task_logs.add(
                    data=entry.text,
                    timestamp=entry.timestamp,
                    file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT,
                )
            if update.entries:
                response.entry_id = str(update.entries[-1].entry_id)
            if update.finished is not None:
                response.result.CopyFrom(_result(update.finished))
                response.metadata.CopyFrom(_metadata(update.finished))
                response.eof = True
            yield response
