"""gRPC handlers for blobs: where to upload a payload, and where to download one."""

from __future__ import annotations

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.services.blobs import BlobService, parse_blob_id


class BlobHandlers:
    def __init__(self, blobs: BlobService) -> None:
        self._blobs = blobs

    async def BlobCreate(self, req: api_pb2.BlobCreateRequest, who: Principal) -> api_pb2.BlobCreateResponse:
        blob_id, url, multipart = self._blobs.create(int(req.content_length))
        resp = api_pb2.BlobCreateResponse(blob_id=blob_id)
        resp.blob_ids.append(blob_id)
        if multipart is not None:
            part_length, part_urls, completion_url = multipart
            part = resp.multiparts.items.add(part_length=part_length, completion_url=completion_url)
            part.upload_urls.extend(part_urls)
        else:
            assert url is not None
            resp.upload_urls.items.append(url)
        return resp

    async def BlobGet(self, req: api_pb2.BlobGetRequest, who: Principal) -> api_pb2.BlobGetResponse:
        return api_pb2.BlobGetResponse(download_url=self._blobs.download_url(parse_blob_id(req.blob_id)))
