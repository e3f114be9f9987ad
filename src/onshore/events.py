"""The events that join the services without their holding each other, and the callback types of the seams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, ParamSpec

from onshore.models import App

if TYPE_CHECKING:
    from onshore.services.containers import Task

P = ParamSpec("P")

# A runtime's reports (Runtime.bind): (task_id, file descriptor, text) of container output, and (task_id,
# return code (negative: killed by that signal), what happened when the runtime knows more, e.g. "ran out of
# memory (its limit is 256 MiB)", else "") of a container that ended.
LogSink = Callable[[str, int, str], None]
ExitSink = Callable[[str, int, str], None]


class Signal(Generic[P]):
    """Listeners called in the order they connected, in the emitter's call (an error reaches the emitter)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[P, None]] = []

    def connect(self, listener: Callable[P, None]) -> None:
        self._listeners.append(listener)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in self._listeners:
            listener(*args, **kwargs)


class AsyncSignal(Generic[P]):
    """Like Signal, with listeners that are awaited one after the other."""

    def __init__(self) -> None:
        self._listeners: list[Callable[P, Awaitable[None]]] = []

    def connect(self, listener: Callable[P, Awaitable[None]]) -> None:
        self._listeners.append(listener)

    async def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in self._listeners:
            await listener(*args, **kwargs)


@dataclass
class Events:
    """The server's one event hub: services emit, the composition root connects the listeners."""

    # (function_id): its queue or its containers changed (the autoscaler reconciles it).
    demand_changed: Signal[[str]] = field(default_factory=Signal)
    # (task_id, reason): a container must end now (its input was cancelled or ran past its timeout).
    kill_task: Signal[[str, str]] = field(default_factory=Signal)
    # (app_id, task_id, function_id, text): a line for the app's logs about one of its inputs (a retry).
    input_note: Signal[[str, str, str, str]] = field(default_factory=Signal)
    # A container ended (its state, exit code and end time are set).
    container_exited: Signal[[Task]] = field(default_factory=Signal)
    # (app, reason, failed: its client gave up on an error): an app stopped; its builds (if failed), calls,
    # containers and log streams end.
    app_stopped: AsyncSignal[[App, str, bool]] = field(default_factory=AsyncSignal)
