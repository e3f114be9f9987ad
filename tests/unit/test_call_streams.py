"""Call data streams: ordered chunks, acknowledged reads, bounded room for the writer, and closing."""

from __future__ import annotations

import asyncio

from onshore.services.call_streams import DataStream
from onshore.services.waiters import Waiters


def test_chunks_come_in_index_order_and_repeats_are_ignored() -> None:
    stream = DataStream(Waiters())
    stream.put([(2, b"b"), (1, b"a")])
    stream.put([(1, b"again")])  # a writer's retry
    assert stream.after(0) == [(1, b"a"), (2, b"b")]
    assert stream.after(1) == [(2, b"b")]
    assert stream.append(b"c") == 3


def test_released_chunks_are_dropped_and_not_taken_again() -> None:
    stream = DataStream(Waiters())
    stream.put([(1, b"aa"), (2, b"bbb")])
    stream.release_through(1)
    assert stream.buffered_bytes == 3
    stream.put([(1, b"aa")])  # already read: not held again
    assert stream.after(0) == [(2, b"bbb")]


def test_a_writer_waits_for_room_until_the_reader_catches_up() -> None:
    async def go() -> list[str]:
        stream = DataStream(Waiters(), limit_bytes=4)
        stream.put([(1, b"12345")])
        events: list[str] = []

        async def writer() -> None:
            events.append("waiting")
            assert await stream.wait_room(5.0)
            events.append("room")

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.05)
        assert events == ["waiting"]
        stream.release_through(1)
        await task
        return events

    assert asyncio.run(go()) == ["waiting", "room"]


def test_reading_acknowledges_and_a_closed_stream_yields_nothing_more() -> None:
    async def go() -> tuple[list[bytes], int]:
        stream = DataStream(Waiters())
        stream.put([(1, b"a"), (2, b"b")])
        got = []

        async def reader() -> None:
            async for _, chunk in stream.read(0, wait=0.3):
                got.append(chunk)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        stream.put([(3, b"c")])
        await asyncio.sleep(0.05)
        held = stream.buffered_bytes
        stream.close()
        stream.put([(4, b"late")])
        await asyncio.wait_for(task, 2.0)  # idle for `wait`, then the reader's request ends
        return got, held

    got, held = asyncio.run(go())
    assert got == [b"a", b"b", b"c"]
    assert held <= 1  # what the reader took was dropped (the last one once it asks for more)


def test_closed_stream_takes_nothing_and_frees_its_writers() -> None:
    async def go() -> bool:
        stream = DataStream(Waiters(), limit_bytes=1)
        stream.put([(1, b"xx")])
        waiter = asyncio.create_task(stream.wait_room(5.0))
        await asyncio.sleep(0.01)
        stream.close()
        stream.put([(2, b"late")])
        assert stream.after(0) == []
        return await waiter

    assert asyncio.run(go()) is False
