"""Dicts and Queues over the in-memory store and a fake clock: creation rules, atomic updates, limits,
blocking gets, and expiry of ephemeral objects and idle queue partitions."""

from __future__ import annotations

import asyncio

import pytest

from onshore.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from onshore.services.clock import FakeClock
from onshore.services.kv import (
    CREATE_EPHEMERAL,
    CREATE_FAIL_IF_EXISTS,
    CREATE_IF_MISSING,
    CREATE_UNSPECIFIED,
    EPHEMERAL_TIMEOUT,
    MAX_QUEUE_PARTITION_ITEMS,
    MAX_VALUE_BYTES,
    KvService,
)
from onshore.store.memory import memory_store


def service() -> tuple[KvService, FakeClock]:
    clock = FakeClock()
    return KvService(memory_store(), clock), clock


def test_creation_types() -> None:
    kv, _ = service()
    with pytest.raises(NotFound, match="Dict 'd' not found"):
        kv.get_or_create("dict", "d", "", CREATE_UNSPECIFIED)
    made, created = kv.get_or_create("dict", "d", "", CREATE_IF_MISSING)
    assert created and kv.get_or_create("dict", "d", "main", CREATE_UNSPECIFIED) == (made, False)
    with pytest.raises(AlreadyExists):
        kv.get_or_create("dict", "d", "", CREATE_FAIL_IF_EXISTS)
    assert kv.get_or_create("queue", "d", "", CREATE_IF_MISSING)[1]  # dicts and queues have their own names
    with pytest.raises(InvalidArgument, match="Invalid Dict name"):
        kv.get_or_create("dict", "bad name!", "", CREATE_IF_MISSING)
    with pytest.raises(NotFound):
        kv.get("queue", made.object_id)  # a dict's id is not a queue's


def test_skip_if_exists_writes_all_or_nothing_and_sizes_are_checked() -> None:
    kv, _ = service()
    d, _ = kv.get_or_create("dict", "d", "", CREATE_IF_MISSING)
    assert kv.dict_update(d.object_id, [(b"a", b"1")])
    assert not kv.dict_update(d.object_id, [(b"b", b"2"), (b"a", b"3")], if_not_exists=True)
    assert kv.dict_items(d.object_id) == [(b"a", b"1")]
    with pytest.raises(InvalidArgument, match="limit"):
        kv.dict_update(d.object_id, [(b"big", b"x" * (MAX_VALUE_BYTES + 1))])
    assert kv.dict_pop(d.object_id, b"a") == b"1" and kv.dict_pop(d.object_id, b"a") is None


def test_a_partition_holds_a_bounded_number_of_items() -> None:
    kv, _ = service()
    q, _ = kv.get_or_create("queue", "q", "", CREATE_IF_MISSING)
    kv.queue_put(q.object_id, b"", [b"x"] * MAX_QUEUE_PARTITION_ITEMS, 60)
    with pytest.raises(ResourceExhausted, match="full"):
        kv.queue_put(q.object_id, b"", [b"one more"], 60)
    kv.queue_put(q.object_id, b"other", [b"fine"], 60)  # another partition has its own room
    assert kv.queue_len(q.object_id, b"", total=True) == MAX_QUEUE_PARTITION_ITEMS + 1


def test_a_blocking_get_wakes_on_a_put_and_times_out_without_one() -> None:
    async def go() -> tuple[list[bytes], list[bytes]]:
        kv, _ = service()
        q, _ = kv.get_or_create("queue", "q", "", CREATE_IF_MISSING)
        waiting = asyncio.create_task(kv.queue_get(q.object_id, b"", 2, timeout=10.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        kv.queue_put(q.object_id, b"", [b"a", b"b", b"c"], 60)
        got = await asyncio.wait_for(waiting, 1.0)
        empty = await kv.queue_get(q.object_id, b"other", 1, timeout=0.05)
        return got, empty

    got, empty = asyncio.run(go())
    assert got == [b"a", b"b"] and empty == []


def test_ephemeral_objects_and_idle_partitions_expire() -> None:
    kv, clock = service()
    eph, _ = kv.get_or_create("dict", "", "", CREATE_EPHEMERAL)
    kept, _ = kv.get_or_create("dict", "kept", "", CREATE_IF_MISSING)
    q, _ = kv.get_or_create("queue", "q", "", CREATE_IF_MISSING)
    kv.queue_put(q.object_id, b"short", [b"x"], ttl_seconds=10)
    kv.queue_put(q.object_id, b"long", [b"y"], ttl_seconds=10_000)
    clock.advance(EPHEMERAL_TIMEOUT / 2)
    kv.heartbeat("dict", eph.object_id)
    assert kv.expire() == 1  # only the short partition
    clock.advance(EPHEMERAL_TIMEOUT + 1)
    assert kv.expire() == 1  # the ephemeral dict, whose client stopped heartbeating
    with pytest.raises(NotFound):
        kv.get("dict", eph.object_id)
    assert kv.get("dict", kept.object_id) == kept
    assert kv.queue_len(q.object_id, b"long", total=False) == 1
    assert kv.list_named("dict", "main") == [kept]
