"""Client for tests/e2e/test_container_cli.py: calls the deployed test app, or runs commands in a container
through the real client's own command-router code (the CLI prints a command's output but drops its exit code).
"""

import asyncio
import json
import sys
import time
import uuid

import modal


def call(function: str, *args: str) -> None:
    fn = modal.Function.from_name("e2e-container-cli", function)
    started = time.monotonic()
    value = fn.remote(args[0], float(args[1])) if function == "slow" else fn.remote(*args)
    print("RESULT call", json.dumps({"value": value, "seconds": time.monotonic() - started}), flush=True)


async def exec_status(task_id: str, command: list[str]) -> None:
    """Run a command as `modal container exec` does, and report its exit status and output."""
    from modal.client import _Client
    from modal.container_process import _ContainerProcess
    from modal.sandbox._impl_v1 import command_router_access_fetcher
    from modal.sandbox._task_command_router_client import TaskCommandRouterClient
    from modal_proto import task_command_router_pb2 as tcr

    client = await _Client.from_env()
    router = await TaskCommandRouterClient.connect(
        client, task_id, command_router_access_fetcher(client, task_id)
    )
    exec_id = str(uuid.uuid4())
    await router.exec_start(
        tcr.TaskExecStartRequest(
            task_id=task_id,
            exec_id=exec_id,
            command_args=command,
            stdout_config=tcr.TaskExecStdoutConfig.TASK_EXEC_STDOUT_CONFIG_PIPE,
            stderr_config=tcr.TaskExecStderrConfig.TASK_EXEC_STDERR_CONFIG_PIPE,
        )
    )
    process = _ContainerProcess(exec_id, task_id, client, command_router_client=router)
    stdout, stderr = await asyncio.gather(process.stdout.read(), process.stderr.read())
    code = await process.wait()
    print("RESULT exec", json.dumps({"code": code, "stdout": stdout, "stderr": stderr}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "call":
        call(sys.argv[2], *sys.argv[3:])
    else:
        from modal._utils.async_utils import synchronizer

        # The client's async internals run on its own event loop, as its CLI runs them.
        synchronizer.create_blocking(exec_status)(sys.argv[2], sys.argv[3:])
