"""What a container gets when it asks for work: a batch of inputs, or the signal to stop taking any."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from onshore.errors import PermissionDenied
from onshore.services.call_state import PendingInput
from onshore.services.calls import CallService
from onshore.services.containers import ContainerService, Task, TaskState
from onshore.services.functions import FunctionService


@dataclass
class InputBatch:
    """Inputs for a container, each with whether it is the last the container may take (max_inputs)."""

    stop: bool = False  # the container takes no more inputs (it stops, or its function changed or ended)
    items: list[tuple[PendingInput, bool]] = field(default_factory=list)


class ContainerInputs:
    def __init__(self, functions: FunctionService, calls: CallService, containers: ContainerService) -> None:
        self._functions = functions
        self._calls = calls
        self._containers = containers

    def hello(self, task: Task) -> None:
        """A container starts talking: it belongs to the function's definition of this moment."""
        if task.generation is None:
            task.generation = self._functions.current_generation(task.function_id)

    def _outdated(self, task: Task) -> bool:
        return task.generation != self._functions.current_generation(task.function_id)

    async def next_batch(self, task: Task, function_id: str, max_size: int, linger_ms: int) -> InputBatch:
        """Wait for up to max_size inputs (lingering linger_ms for more once one came)."""
        if function_id != task.function_id:
            raise PermissionDenied(f"This container runs {task.function_id}, not {function_id}")
        self.hello(task)
        self._containers.mark_running(task)
        if (
            task.state == TaskState.STOPPING
            or self._outdated(task)
            or not self._functions.is_runnable(function_id)
        ):
            return InputBatch(stop=True)
        spec = self._functions.spec(function_id)
        size = max(1, max_size)
        items = await self._calls.next_inputs(task.task_id, function_id, size)
        if items and self._outdated(task):
            # The function was redeployed while this container waited: its inputs go to a new container.
            self._calls.give_back(task.task_id, items)
            return InputBatch(stop=True)
        if items and size > len(items) and linger_ms:
            await asyncio.sleep(linger_ms / 1000)
            items += await self._calls.next_inputs(task.task_id, function_id, size - len(items), wait=False)
        batch = InputBatch()
        for item in items:
            task.inputs_served += 1
            final = spec is not None and bool(spec.max_inputs) and task.inputs_served >= spec.max_inputs
            batch.items.append((item, final))
        if items:
            self._containers.touch(task)
        return batch
