"""gRPC handlers for Dicts and Queues: get-or-create, entries and items, lists, heartbeats and deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument
from onshore.models import KvObject
from onshore.services.kv import KvService


def _creation(obj: KvObject) -> api_pb2.CreationInfo:
    return api_pb2.CreationInfo(created_at=obj.created_at, created_by="onshore")


def _limit(pagination: api_pb2.ListPagination, objects: list[KvObject]) -> list[KvObject]:
    if pagination.created_before:
        objects = [o for o in objects if o.created_at < pagination.created_before]
    objects = sorted(objects, key=lambda o: -o.created_at)
    return objects[: pagination.max_objects] if pagination.max_objects > 0 else objects


class KvHandlers:
    def __init__(self, kv: KvService) -> None:
        self._kv = kv

    # ---------------------------------------------------------------- dicts
    async def DictGetOrCreate(
        self, req: api_pb2.DictGetOrCreateRequest, who: Principal
    ) -> api_pb2.DictGetOrCreateResponse:
        obj, created = self._kv.get_or_create(
            "dict", req.deployment_name, req.environment_name, req.object_creation_type
        )
        if created and req.data:
            self._kv.dict_update(obj.object_id, [(e.key, e.value) for e in req.data])
        return api_pb2.DictGetOrCreateResponse(
            dict_id=obj.object_id, metadata=api_pb2.DictMetadata(name=obj.name, creation_info=_creation(obj))
        )

    async def DictGetById(
        self, req: api_pb2.DictGetByIdRequest, who: Principal
    ) -> api_pb2.DictGetByIdResponse:
        obj = self._kv.get("dict", req.dict_id)
        return api_pb2.DictGetByIdResponse(
            dict_id=obj.object_id, metadata=api_pb2.DictMetadata(name=obj.name, creation_info=_creation(obj))
        )

    async def DictHeartbeat(self, req: api_pb2.DictHeartbeatRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.heartbeat("dict", req.dict_id)
        return empty_pb2.Empty()

    async def DictList(self, req: api_pb2.DictListRequest, who: Principal) -> api_pb2.DictListResponse:
        env = req.environment_name or "main"
        resp = api_pb2.DictListResponse(environment_name=env)
        for obj in _limit(req.pagination, self._kv.list_named("dict", env)):
            resp.dicts.add(
                name=obj.name,
                created_at=obj.created_at,
                dict_id=obj.object_id,
                metadata=api_pb2.DictMetadata(name=obj.name, creation_info=_creation(obj)),
            )
        return resp

    async def DictDelete(self, req: api_pb2.DictDeleteRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.delete("dict", req.dict_id)
        return empty_pb2.Empty()

    async def DictClear(self, req: api_pb2.DictClearRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.dict_clear(req.dict_id)
        return empty_pb2.Empty()

    async def DictGet(self, req: api_pb2.DictGetRequest, who: Principal) -> api_pb2.DictGetResponse:
        value = self._kv.dict_get(req.dict_id, req.key)
        if value is None:
            return api_pb2.DictGetResponse(found=False)
        return api_pb2.DictGetResponse(found=True, value=value)

    async def DictContains(
        self, req: api_pb2.DictContainsRequest, who: Principal
    ) -> api_pb2.DictContainsResponse:
        return api_pb2.DictContainsResponse(found=self._kv.dict_get(req.dict_id, req.key) is not None)

    async def DictLen(self, req: api_pb2.DictLenRequest, who: Principal) -> api_pb2.DictLenResponse:
        return api_pb2.DictLenResponse(len=self._kv.dict_len(req.dict_id))

    async def DictUpdate(self, req: api_pb2.DictUpdateRequest, who: Principal) -> api_pb2.DictUpdateResponse:
        written = self._kv.dict_update(
            req.dict_id, [(e.key, e.value) for e in req.updates], req.if_not_exists
        )
        return api_pb2.DictUpdateResponse(created=written)

    async def DictPop(self, req: api_pb2.DictPopRequest, who: Principal) -> api_pb2.DictPopResponse:
        value = self._kv.dict_pop(req.dict_id, req.key)
        if value is None:
            return api_pb2.DictPopResponse(found=False)
        return api_pb2.DictPopResponse(found=True, value=value)

    async def DictContents(
        self, req: api_pb2.DictContentsRequest, who: Principal
    ) -> AsyncIterator[api_pb2.DictEntry]:
        for key, value in self._kv.dict_items(req.dict_id):
            yield api_pb2.DictEntry(key=key if req.keys else b"", value=value if req.values else b"")

    # ---------------------------------------------------------------- queues
    async def QueueGetOrCreate(
        self, req: api_pb2.QueueGetOrCreateRequest, who: Principal
    ) -> api_pb2.QueueGetOrCreateResponse:
        obj, _ = self._kv.get_or_create(
            "queue", req.deployment_name, req.environment_name, req.object_creation_type
        )
        return api_pb2.QueueGetOrCreateResponse(
            queue_id=obj.object_id,
            metadata=api_pb2.QueueMetadata(name=obj.name, creation_info=_creation(obj)),
        )

    async def QueueGetById(
        self, req: api_pb2.QueueGetByIdRequest, who: Principal
    ) -> api_pb2.QueueGetByIdResponse:
        obj = self._kv.get("queue", req.queue_id)
        return api_pb2.QueueGetByIdResponse(
            queue_id=obj.object_id,
            metadata=api_pb2.QueueMetadata(name=obj.name, creation_info=_creation(obj)),
        )

    async def QueueHeartbeat(self, req: api_pb2.QueueHeartbeatRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.heartbeat("queue", req.queue_id)
        return empty_pb2.Empty()

    async def QueueList(self, req: api_pb2.QueueListRequest, who: Principal) -> api_pb2.QueueListResponse:
        env = req.environment_name or "main"
        resp = api_pb2.QueueListResponse(environment_name=env)
        for obj in _limit(req.pagination, self._kv.list_named("queue", env)):
            partitions, total = self._kv.queue_stats(obj.object_id)
            resp.queues.add(
                name=obj.name,
                created_at=obj.created_at,
                num_partitions=partitions,
                total_size=total,
                queue_id=obj.object_id,
                metadata=api_pb2.QueueMetadata(name=obj.name, creation_info=_creation(obj)),
            )
        return resp

    async def QueueDelete(self, req: api_pb2.QueueDeleteRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.delete("queue", req.queue_id)
        return empty_pb2.Empty()

    async def QueueClear(self, req: api_pb2.QueueClearRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.queue_clear(req.queue_id, req.partition_key, req.all_partitions)
        return empty_pb2.Empty()

    async def QueuePut(self, req: api_pb2.QueuePutRequest, who: Principal) -> empty_pb2.Empty:
        self._kv.queue_put(req.queue_id, req.partition_key, list(req.values), req.partition_ttl_seconds)
        return empty_pb2.Empty()

    async def QueueGet(self, req: api_pb2.QueueGetRequest, who: Principal) -> api_pb2.QueueGetResponse:
        values = await self._kv.queue_get(req.queue_id, req.partition_key, req.n_values, req.timeout)
        return api_pb2.QueueGetResponse(values=values)

    async def QueueLen(self, req: api_pb2.QueueLenRequest, who: Principal) -> api_pb2.QueueLenResponse:
        return api_pb2.QueueLenResponse(len=self._kv.queue_len(req.queue_id, req.partition_key, req.total))

    async def QueueNextItems(
        self, req: api_pb2.QueueNextItemsRequest, who: Principal
    ) -> api_pb2.QueueNextItemsResponse:
        raw = req.last_entry_id
        if raw and not raw.isdigit():
            raise InvalidArgument(f"Bad last_entry_id {raw!r}")
        items = await self._kv.queue_next(
            req.queue_id, req.partition_key, int(raw or 0), req.item_poll_timeout
        )
        return api_pb2.QueueNextItemsResponse(
            items=[api_pb2.QueueItem(value=v, entry_id=str(e)) for e, v in items]
        )
