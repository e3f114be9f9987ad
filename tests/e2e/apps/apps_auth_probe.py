"""Test app for tests/e2e/test_auth.py: a container that tries, with its own credential, to touch another app.

`probe` uses the client inside the container (which sends the container's credential) to act on a victim
app; `credential` hands its credential to the test, which replays it from outside.
"""

import os

import modal
from modal_proto import api_pb2

app = modal.App("e2e-auth-probe")


@app.function(scaledown_window=60)
def credential() -> dict[str, str]:
    return {"task_id": os.environ.get("MODAL_TASK_ID", ""), "headers": os.environ.get("MODAL_OVERRIDE_HEADERS", "")}


async def _attempt(coro: object) -> str:
    try:
        await coro  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - the test inspects the type
        return f"{type(exc).__name__}: {exc}"
    return "ok"


@app.function(scaledown_window=60)
async def probe(victim_app: str, victim_app_id: str, victim_function_id: str, own_app_id: str) -> dict[str, str]:
    client = await modal.Client.from_env.aio()
    stub = client.stub
    return {
        # A positive control: the same credential may read its own app's layout.
        "own_layout": await _attempt(stub.AppGetLayout(api_pb2.AppGetLayoutRequest(app_id=own_app_id))),
        "function_lookup": await _attempt(modal.Function.from_name(victim_app, "hello").hydrate.aio()),
        "app_stop": await _attempt(stub.AppStop(api_pb2.AppStopRequest(app_id=victim_app_id))),
        "app_disconnect": await _attempt(
            stub.AppClientDisconnect(api_pb2.AppClientDisconnectRequest(app_id=victim_app_id))
        ),
        "app_publish": await _attempt(
            stub.AppPublish(
                api_pb2.AppPublishRequest(
                    app_id=victim_app_id, name=victim_app, app_state=api_pb2.APP_STATE_DEPLOYED
                )
            )
        ),
        "function_precreate": await _attempt(
            stub.FunctionPrecreate(api_pb2.FunctionPrecreateRequest(app_id=victim_app_id, function_name="evil"))
        ),
        "app_layout": await _attempt(stub.AppGetLayout(api_pb2.AppGetLayoutRequest(app_id=victim_app_id))),
        "app_fetch_logs": await _attempt(stub.AppFetchLogs(api_pb2.AppFetchLogsRequest(app_id=victim_app_id))),
        "function_map": await _attempt(
            stub.FunctionMap(
                api_pb2.FunctionMapRequest(
                    function_id=victim_function_id,
                    function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY,
                )
            )
        ),
    }
