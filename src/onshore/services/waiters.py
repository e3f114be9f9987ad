"""Waiters: coroutines that wait for something to change, woken together by one notify()."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


class Waiters:
    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []

    @property
    def waiting(self) -> bool:
        return bool(self._futures)

    def notify(self) -> None:
        futures, self._futures = self._futures, []
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return at the next notify(), or after `timeout` seconds.

        The future is awaited directly, with a timer that resolves it: a notify() resumes the waiter in
        the next turn of the event loop (asyncio.wait_for would add turns to the hot path).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append(fut)
        timer = loop.call_later(max(0.0, timeout), resolve, fut, None)
        try:
            await fut
        finally:
            timer.cancel()
            if fut in self._futures:
                self._futures.remove(fut)


def resolve(fut: asyncio.Future[T], value: T) -> None:
    """Give a future its result unless it already has one (a timer callback)."""
    if not fut.done():
        fut.set_result(value)
