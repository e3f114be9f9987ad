"""A call's data stream (generator items, or one side of a web request's exchange): ordered, bounded chunks.

The reader acknowledges what it has (a request for the chunks after index N has every chunk up to N), and
acknowledged chunks are dropped: a stream holds only what is unread, and a writer that gets too far ahead
waits for room. That is the backpressure of a web request's body on its way in and of its response out.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator

from onshore.services.waiters import Waiters

DEFAULT_LIMIT_BYTES = 32 * 1024 * 1024


class DataStream:
    def __init__(self, waiters: Waiters, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self._waiters = (
            waiters  # shared with the call: a change in the stream wakes whoever waits on the call
        )
        self._limit = limit_bytes
        self._indexes: list[int] = []
        self._chunks: dict[int, bytes] = {}
        self._bytes = 0
        self._released = 0  # every chunk at or below this index was read and dropped
        self.next_index = 1  # the index the next append() takes
        self.closed = False

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def put(self, chunks: list[tuple[int, bytes]]) -> None:
        """Chunks by index; a repeated or already-read index is ignored (a writer's retry)."""
        if self.closed:
            return
        for index, chunk in chunks:
            if index <= self._released or index in self._chunks:
                continue
            bisect.insort(self._indexes, index)
            self._chunks[index] = chunk
            self._bytes += len(chunk)
            self.next_index = max(self.next_index, index + 1)
        self._waiters.notify()

    def append(self, chunk: bytes) -> int:
        """Add a chunk at the next index; that index."""
        index = self.next_index
        self.put([(index, chunk)])
        return index

    def after(self, last_index: int) -> list[tuple[int, bytes]]:
        """The chunks held with an index above last_index, in order."""
        start = bisect.bisect_right(self._indexes, last_index)
        return [(i, self._chunks[i]) for i in self._indexes[start:]]

    def release_through(self, index: int) -> None:
        """The reader has every chunk up to index: drop them (a writer waiting for room may go on)."""
        if index <= self._released:
            return
        self._released = index
        end = bisect.bisect_right(self._indexes, index)
        for i in self._indexes[:end]:
            self._bytes -= len(self._chunks.pop(i))
        del self._indexes[:end]
        self._waiters.notify()

    def close(self) -> None:
        """No more chunks are taken (the call ended): writers stop waiting, readers see the end."""
        self.closed = True
        self._indexes.clear()
        self._chunks.clear()
        self._bytes = 0
        self._waiters.notify()

    async def wait_room(self, timeout: float) -> bool:
        """Wait until the stream holds less than its limit unread (True), or it closed or timeout passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._bytes >= self._limit and not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._waiters.wait(remaining)
        return not self.closed

    async def read(self, last_index: int, wait: float) -> AsyncIterator[tuple[int, bytes]]:
        """Chunks after last_index as they come; ends after `wait` seconds without any. A closed stream yields
        nothing more, and its reader waits out `wait` as for an idle one (a container's web wrapper drops its
        request stream once the app is done, and asks again if it ends first).

        Asking for chunks after last_index acknowledges every chunk up to it, and a chunk is dropped once
        the reader has taken it and asked for the next (a gRPC stream resumes this generator once it sent
        the chunk).
        """
        self.release_through(last_index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            fresh = self.after(last_index)
            for index, chunk in fresh:
                last_index = index
                yield index, chunk
                self.release_through(index)
            if fresh:
                deadline = loop.time() + wait
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._waiters.wait(remaining)
