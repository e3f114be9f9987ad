"""Dicts and Queues: named or ephemeral objects, their entries and items, and gets that wait without polling.

Keys and values are the client's serialized bytes, stored as they are; a key is the same key when its bytes
are. Everything is written to the store before a call returns, so both survive a restart. An ephemeral
object lives while its client heartbeats; the janitor removes it after EPHEMERAL_TIMEOUT without one.
"""

from __future__ import annotations

import asyncio
import collections
import re

from onshore import ids
from onshore.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from onshore.models import KvObject
from onshore.services.clock import Clock
from onshore.services.waiters import Waiters
from onshore.store.base import KvStore

# ObjectCreationType numbers (kept here so services stay free of protobuf).
CREATE_UNSPECIFIED = 0
CREATE_IF_MISSING = 1
CREATE_FAIL_IF_EXISTS = 2
CREATE_EPHEMERAL = 5

EPHEMERAL_TIMEOUT = 900.0  # three of the client's 300 s heartbeats missed
MAX_QUEUE_PARTITION_ITEMS = 5_000
MAX_VALUE_BYTES = 1024 * 1024  # one key, value or queue item, serialized
MAX_WAIT_SECONDS = 55.0
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

NOUN = {"dict": "Dict", "queue": "Queue", "volume": "Volume"}


class KvService:
    def __init__(self, store: KvStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._waiters: dict[tuple[str, bytes], Waiters] = collections.defaultdict(Waiters)

    # ---------------------------------------------------------------- objects
    def get_or_create(
        self, kind: str, name: str, environment: str, creation: int, fs_version: int = 0
    ) -> tuple[KvObject, bool]:
        """The object and whether it was created now (a volume's with this VolumeFS version)."""
        environment = environment or "main"
        noun = NOUN[kind]
        if creation == CREATE_EPHEMERAL:
            if name:
                raise InvalidArgument(f"An ephemeral {noun} has no name (got {name!r})")
            now = self._clock.now()
            obj = KvObject(
                ids.new_id(kind),
                kind,
                now,
                environment=environment,
                ephemeral=True,
                last_heartbeat=now,
                fs_version=fs_version,
            )
            self._store.put_kv_object(obj)
            return obj, True
        if not _NAME_RE.match(name):
            raise InvalidArgument(f"Invalid {noun} name {name!r}: use 1-64 letters, digits, '.', '-' and '_'")
        found = self._store.find_kv_object(kind, name, environment)
        if found is not None:
            if creation == CREATE_FAIL_IF_EXISTS:
                raise AlreadyExists(f"{noun} '{name}' already exists in environment '{environment}'")
            return found, False
        if creation not in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS):
            raise NotFound(f"{noun} '{name}' not found in environment '{environment}'")
        obj = KvObject(
            ids.new_id(kind),
            kind,
            self._clock.now(),
            name=name,
            environment=environment,
            fs_version=fs_version,
        )
        self._store.put_kv_object(obj)
        return obj, True

    def get(self, kind: str, object_id: str) -> KvObject:
        obj = self._store.get_kv_object(object_id) if object_id else None
        if obj is None or obj.kind != kind:
            raise NotFound(f"{NOUN[kind]} {object_id or '(no id)'} not found")
        return obj

    def list_named(self, kind: str, environment: str) -> list[KvObject]:
        env = environment or "main"
        return [o for o in self._store.list_kv_objects(kind) if o.name and o.environment == env]

    def delete(self, kind: str, object_id: str) -> None:
        self.get(kind, object_id)
        self._store.delete_kv_object(object_id)
        for key in [k for k in self._waiters if k[0] == object_id]:
            self._waiters.pop(key).notify()

    def rename(self, kind: str, object_id: str, name: str) -> None:
        obj = self.get(kind, object_id)
        noun = NOUN[kind]
        if not _NAME_RE.match(name):
            raise InvalidArgument(f"Invalid {noun} name {name!r}: use 1-64 letters, digits, '.', '-' and '_'")
        if obj.ephemeral:
            raise InvalidArgument(f"An ephemeral {noun} has no name to change")
        if self._store.find_kv_object(kind, name, obj.environment) is not None:
            raise AlreadyExists(f"{noun} '{name}' already exists in environment '{obj.environment}'")
        obj.name = name
        self._store.put_kv_object(obj)

    def heartbeat(self, kind: str, object_id: str) -> None:
        obj = self.get(kind, object_id)
        if obj.ephemeral:
            obj.last_heartbeat = self._clock.now()
            self._store.put_kv_object(obj)

    def expire(self) -> int:
        """Remove ephemeral objects whose clients stopped heartbeating, and queue partitions past TTL."""
        cutoff = self._clock.now() - EPHEMERAL_TIMEOUT
        gone = 0
        for kind in NOUN:
            for obj in self._store.list_kv_objects(kind):
                if obj.ephemeral and obj.last_heartbeat < cutoff:
                    self._store.delete_kv_object(obj.object_id)
                    gone += 1
        return gone + self._store.queue_expire(self._clock.now())

    # ---------------------------------------------------------------- dicts
    def _dict(self, dict_id: str) -> str:
        return self.get("dict", dict_id).object_id

    def dict_get(self, dict_id: str, key: bytes) -> bytes | None:
        return self._store.dict_get(self._dict(dict_id), key)

    def dict_update(
        self, dict_id: str, entries: list[tuple[bytes, bytes]], if_not_exists: bool = False
    ) -> bool:
        for key, value in entries:
            _check_size("key", key)
            _check_size("value", value)
        return self._store.dict_update(self._dict(dict_id), entries, if_not_exists)

    def dict_pop(self, dict_id: str, key: bytes) -> bytes | None:
        return self._store.dict_pop(self._dict(dict_id), key)

    def dict_len(self, dict_id: str) -> int:
        return self._store.dict_len(self._dict(dict_id))

    def dict_clear(self, dict_id: str) -> None:
        self._store.dict_clear(self._dict(dict_id))

    def dict_items(self, dict_id: str) -> list[tuple[bytes, bytes]]:
        return self._store.dict_items(self._dict(dict_id))

    # ---------------------------------------------------------------- queues
    def _queue(self, queue_id: str) -> str:
        return self.get("queue", queue_id).object_id

    def queue_put(self, queue_id: str, partition: bytes, values: list[bytes], ttl_seconds: int) -> None:
        """Append; ResourceExhausted past the partition's limit (the client retries, or says it is full)."""
        qid = self._queue(queue_id)
        _check_partition(partition)
        for value in values:
            _check_size("queue item", value)
        ttl = ttl_seconds if ttl_seconds > 0 else 24 * 3600
        if not self._store.queue_push(
            qid, partition, values, ttl, self._clock.now(), MAX_QUEUE_PARTITION_ITEMS
        ):
            raise ResourceExhausted(
                f"Queue {qid} partition is full: it holds at most {MAX_QUEUE_PARTITION_ITEMS} items"
            )
        self._waiters[(qid, partition)].notify()

    async def queue_get(self, queue_id: str, partition: bytes, count: int, timeout: float) -> list[bytes]:
        """Take up to `count` items; if there are none, wait up to `timeout` for a put (by any process)."""
        qid = self._queue(queue_id)
        _check_partition(partition)
        count = max(1, count)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        while True:
            taken = self._store.queue_pop(qid, partition, count, self._clock.now())
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            await self._waiters[(qid, partition)].wait(remaining)

    def queue_len(self, queue_id: str, partition: bytes, total: bool) -> int:
        return self._store.queue_len(self._queue(queue_id), None if total else partition)

    def queue_clear(self, queue_id: str, partition: bytes, all_partitions: bool) -> None:
        if all_partitions and partition:
            raise InvalidArgument("Clear one partition or all of them, not both")
        self._store.queue_clear(self._queue(queue_id), None if all_partitions else partition)

    async def queue_next(
        self, queue_id: str, partition: bytes, after: int, timeout: float, limit: int = 100
    ) -> list[tuple[int, bytes]]:
        """Items after entry id `after`, without taking them; waits up to `timeout` for one."""
        qid = self._queue(queue_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        while True:
            found = self._store.queue_after(qid, partition, after, limit)
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            await self._waiters[(qid, partition)].wait(remaining)

    def queue_stats(self, queue_id: str) -> tuple[int, int]:
        """(partitions with items, items in all of them)."""
        return self._store.queue_partitions(queue_id), self._store.queue_len(queue_id, None)


def _check_size(what: str, data: bytes) -> None:
    if len(data) > MAX_VALUE_BYTES:
        # "status = '413'" is how the client recognises a request that is too large (it then raises its
        # RequestSizeError, as for Modal's HTTP 413).
        raise InvalidArgument(
            f"A {what} is {len(data)} bytes serialized; the limit is {MAX_VALUE_BYTES} "
            "(status = '413': request too large)"
        )


def _check_partition(partition: bytes) -> None:
    if len(partition) > 64:
        raise InvalidArgument("Queue partition key must be between 1 and 64 characters.")
