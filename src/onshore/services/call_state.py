"""In-memory state of function calls: pending inputs, per-call outputs and waiters, per-function queues."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from onshore.models import OutputRecord, Payload
from onshore.services.call_streams import DataStream
from onshore.services.waiters import Waiters

# GenericResult.GenericStatus numbers (kept here so this module stays free of protobuf).
STATUS_SUCCESS = 1
STATUS_FAILURE = 2
STATUS_TERMINATED = 3
STATUS_TIMEOUT = 4
STATUS_INIT_FAILURE = 5
STATUS_INTERNAL_FAILURE = 6

# FunctionCallInvocationType numbers.
INVOCATION_SYNC_LEGACY = 1
INVOCATION_ASYNC_LEGACY = 2
INVOCATION_ASYNC = 3
INVOCATION_SYNC = 4

DATA_FORMAT_GENERATOR_DONE = 3

MAX_OUTPUTS_PER_RESPONSE = 1000
MAP_BATCH_TARGET = 16
MAP_LINGER_SECONDS = 0.005


@dataclass
class PendingInput:
    input_id: str
    call: CallState
    idx: int
    payload: Payload  # a FunctionInput (see models.Payload)
    # Attempts the server has retried (its retry policy counts these; the container is told the number).
    retry_count: int = 0
    # The attempt number the caller knows of: raised only by the caller's own FunctionRetryInputs. A map's
    # client drops outputs whose retry_count differs from its own, so server-side retries must not show.
    client_retry_count: int = 0
    retryable: bool = True  # False once a retry could not help (its app stopped, its containers cannot start)
    task_id: str = ""
    started_at: float = 0.0
    done: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class CallState:
    function_call_id: str
    function_id: str
    app_id: str
    call_type: int
    invocation_type: int
    persistent: bool
    created_at: float
    outputs: list[OutputRecord] = field(default_factory=list)
    cleared: set[str] = field(default_factory=set)
    num_inputs: int = 0
    num_done: int = 0
    next_entry_id: int = 1
    inputs: dict[str, PendingInput] = field(default_factory=dict)
    waiters: Waiters = field(default_factory=Waiters)
    last_polled: float = 0.0  # the clock's monotonic time of the caller's last look at the outputs
    forgotten: bool = False  # the caller is done with it (a web request answered): dropped once it ends
    # Serialized DataChunks: generator items and a web response (out, from the container), a web request's
    # body and events (in, to the container). A change in either wakes the call's waiters.
    data_out: DataStream = field(init=False)
    data_in: DataStream = field(init=False)

    def __post_init__(self) -> None:
        self.data_out = DataStream(self.waiters)
        self.data_in = DataStream(self.waiters)

    @property
    def jwt(self) -> str:
        return f"fc:{self.function_call_id}"

    @property
    def unfinished(self) -> int:
        return self.num_inputs - self.num_done

    def notify(self) -> None:
        self.waiters.notify()

    async def wait_change(self, timeout: float) -> None:
        await self.waiters.wait(timeout)


@dataclass(frozen=True)
class FinishedInput:
    """An input that ended, as the app pages list it."""

    function_id: str
    input_id: str
    function_call_id: str
    status: int
    queued_at: float
    started_at: float  # 0.0: it never reached a container
    finished_at: float


class InputHistory:
    """The latest finished inputs of each app (a bounded list per app)."""

    def __init__(self, per_app: int = 200) -> None:
        self._per_app = per_app
        self._apps: dict[str, collections.deque[FinishedInput]] = {}

    def add(self, app_id: str, finished: FinishedInput) -> None:
        self._apps.setdefault(app_id, collections.deque(maxlen=self._per_app)).append(finished)

    def recent(self, app_id: str) -> list[FinishedInput]:
        """Newest first."""
        return list(reversed(self._apps.get(app_id, ())))


class TaskCancels:
    """Inputs cancelled on each container, until its next heartbeat takes them; a heartbeat held open
    waits for one."""

    def __init__(self) -> None:
        self._pending: dict[str, list[str]] = {}
        self._waiters: dict[str, Waiters] = {}

    def add(self, task_id: str, input_id: str) -> None:
        self._pending.setdefault(task_id, []).append(input_id)
        waiters = self._waiters.pop(task_id, None)
        if waiters is not None:
            waiters.notify()

    def take(self, task_id: str) -> list[str]:
        return self._pending.pop(task_id, [])

    async def wait(self, task_id: str, timeout: float) -> list[str]:
        """take(), after waiting up to `timeout` for a cancellation when there is none yet."""
        if task_id not in self._pending and timeout > 0:
            waiters = self._waiters.setdefault(task_id, Waiters())
            await waiters.wait(timeout)
            if self._waiters.get(task_id) is waiters and not waiters.waiting:
                del self._waiters[task_id]
        return self.take(task_id)


@dataclass
class ContainerOutput:
    """An output as a container reports it (FunctionPutOutputs item)."""

    input_id: str
    status: int
    result: Payload  # a GenericResult
    data_format: int
    input_started_at: float
    output_created_at: float
    retry_count: int


class FunctionQueue:
    """Inputs waiting for a container of one function, and the containers waiting for inputs."""

    def __init__(self) -> None:
        self.pending: collections.deque[PendingInput] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[PendingInput | None]] = collections.deque()
        self.inflight = 0

    def offer(self, item: PendingInput, front: bool = False) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(item)
                return
        if front:
            self.pending.appendleft(item)
        else:
            self.pending.append(item)
