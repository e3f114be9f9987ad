"""SqliteStore: every record type round-trips, lookups find the right rows, and a file survives reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from onshore.models import (
    App,
    AppState,
    CallRecord,
    ClassRecord,
    DeploymentRecord,
    FunctionRecord,
    FunctionSpec,
    ImageRecord,
    Mount,
    MountFile,
    OutputRecord,
    RetryPolicy,
    Secret,
    StoredInput,
    Token,
)
from onshore.store.memory import memory_store
from onshore.store.sqlite import SqliteStore


@pytest.fixture
def store() -> SqliteStore:
    return memory_store()


def an_app(app_id: str = "ap-1", **kwargs: object) -> App:
    base: dict[str, object] = dict(
        app_id=app_id,
        description="my app",
        state=AppState.DEPLOYED,
        created_at=1.5,
        environment="main",
        name="my-app",
        stopped_at=None,
        deployed_at=2.5,
        version=3,
        client_version="1.6.4",
        function_ids={"f": "fu-1", "g": "fu-2"},
        class_ids={"C": "cs-1"},
        last_heartbeat=9.0,
    )
    base.update(kwargs)
    return App(**base)  # type: ignore[arg-type]


def a_function(function_id: str = "fu-1", app_id: str = "ap-1") -> FunctionRecord:
    spec = FunctionSpec(
        tag="f",
        module_name="mod",
        timeout_secs=17,
        retry=RetryPolicy(max_retries=2, initial_delay_ms=250, backoff_coefficient=1.5, max_delay_ms=9000),
        min_containers=1,
        max_containers=4,
        buffer_containers=1,
        scaledown_window=2.5,
        max_concurrent_inputs=3,
        max_inputs=10,
        secret_ids=["st-1", "st-2"],
        mount_ids=["mo-1"],
        image_id="im-1",
        is_class=True,
        is_generator=False,
        object_dependencies=["fu-9"],
    )
    return FunctionRecord(
        function_id=function_id,
        app_id=app_id,
        spec=spec,
        definition=b"\x00\x01definition\xff",
        precreate=b"\x02pre",
        definition_id="de-1",
        parent_function_id="",
        serialized_params=b"",
        created_at=4.0,
    )


def test_app_and_deployments(store: SqliteStore) -> None:
    app = an_app()
    store.put_app(app)
    assert store.get_app("ap-1") == app
    assert store.get_app("ap-missing") is None
    stopped = an_app("ap-2", state=AppState.STOPPED, stopped_at=7.0, name="", function_ids={})
    store.put_app(stopped)
    assert store.list_apps() == [app, stopped]
    # Replacing a record updates it in place.
    app.state = AppState.STOPPED
    app.version = 4
    store.put_app(app)
    assert store.get_app("ap-1") == app
    assert sorted(a.app_id for a in store.list_apps()) == ["ap-1", "ap-2"]

    d2 = DeploymentRecord("ap-1", 2, 20.0, "1.6.4", "me")
    d1 = DeploymentRecord("ap-1", 1, 10.0, "1.6.3")
    store.add_deployment(d2)
    store.add_deployment(d1)
    store.add_deployment(DeploymentRecord("ap-2", 1, 30.0, "1.6.4"))
    assert store.list_deployments("ap-1") == [d1, d2]
    assert store.list_deployments("ap-none") == []


def test_functions_and_classes(store: SqliteStore) -> None:
    fn = a_function()
    bound = FunctionRecord(
        function_id="fu-2",
        app_id="ap-1",
        spec=FunctionSpec(tag="f"),
        parent_function_id="fu-1",
        serialized_params=b"\x10params",
    )
    other = a_function("fu-3", app_id="ap-2")
    for record in (fn, bound, other):
        store.put_function(record)
    assert store.get_function("fu-1") == fn
    assert store.get_function("fu-2") == bound
    assert store.get_function("fu-missing") is None
    assert store.list_functions("ap-1") == [fn, bound]
    assert store.list_functions("ap-2") == [other]

    cls = ClassRecord("cs-1", "ap-1", tag="C", metadata=b"\x00meta")
    store.put_class(cls)
    assert store.get_class("cs-1") == cls
    assert store.get_class("cs-missing") is None


def test_secrets(store: SqliteStore) -> None:
    named = Secret("st-1", {"A": "1", "B": "two"}, 1.0, name="creds", environment="main", last_used_at=None)
    anonymous = Secret("st-2", {"X": "y"}, 2.0, app_id="ap-1")
    elsewhere = Secret("st-3", {}, 3.0, name="creds", environment="dev", last_used_at=5.0)
    for s in (named, anonymous, elsewhere):
        store.put_secret(s)
    assert store.get_secret("st-1") == named
    assert store.get_secret("st-2") == anonymous
    assert store.find_secret("creds", "main") == named
    assert store.find_secret("creds", "dev") == elsewhere
    assert store.find_secret("nope", "main") is None
    # Anonymous secrets (no name) are not listed.
    assert store.list_secrets("main") == [named]
    store.delete_secret("st-1")
    assert store.get_secret("st-1") is None and store.find_secret("creds", "main") is None


def test_tokens(store: SqliteStore) -> None:
    t1 = Token("ak-1", "hash1", 1.0, label="ci")
    t2 = Token("ak-2", "hash2", 2.0, revoked_at=3.0)
    store.put_token(t1)
    store.put_token(t2)
    assert store.get_token("ak-1") == t1
    assert store.get_token("ak-2") == t2
    assert store.get_token("ak-3") is None
    assert store.list_tokens() == [t1, t2]


def test_mounts_and_images(store: SqliteStore) -> None:
    mount = Mount(
        "mo-1",
        [MountFile("/root/a.py", "a" * 64, 0o755), MountFile("/root/pkg/b.py", "b" * 64)],
        1.0,
        deployment_name="dep",
        namespace=1,
        app_id="ap-1",
    )
    client = Mount(
        "mo-2", [], 2.0, deployment_name="modal-client-mount-1.6.4", kind="client", client_version="1.6.4"
    )
    store.put_mount(mount)
    store.put_mount(client)
    assert store.get_mount("mo-1") == mount
    assert store.get_mount("mo-2") == client
    assert store.get_mount("mo-3") is None

    ready = ImageRecord("im-1", "h1", b"\x01def", 1.0, python_version="3.11.9")
    failed = ImageRecord("im-2", "h2", b"", 2.0, status="failed", error="no pip yet")
    store.put_image(ready)
    store.put_image(failed)
    assert store.get_image("im-1") == ready
    assert store.find_image("h2") == failed
    assert store.find_image("h3") is None


def test_spawned_calls_inputs_and_outputs(store: SqliteStore) -> None:
    call = CallRecord("fc-1", "fu-1", "ap-1", invocation_type=3, created_at=1.0, call_type=1)
    store.put_call(call)
    assert store.get_call("fc-1") == call
    assert store.get_call("fc-2") is None

    inputs = [StoredInput(f"in-{i}", "fc-1", "fu-1", i, bytes([i, 0, 255]), retry_count=i) for i in range(3)]
    other = StoredInput("in-x", "fc-2", "fu-1", 0, b"other")
    for item in (*inputs, other):
        store.put_input(item)
    assert store.inputs_for_call("fc-1") == inputs
    assert store.unfinished_inputs() == [*inputs, other]

    out = OutputRecord(
        input_id="in-0",
        function_call_id="fc-1",
        idx=0,
        status=1,
        result=b"\x08\x01result",
        data_format=1,
        task_id="ta-1",
        input_started_at=1.25,
        output_created_at=2.5,
        retry_count=1,
        entry_id=7,
    )
    store.put_output(out)
    assert store.outputs_for_call("fc-1") == [out]
    assert store.outputs_for_call("fc-2") == []
    # An output finishes its input.
    assert [i.input_id for i in store.unfinished_inputs()] == ["in-1", "in-2", "in-x"]


def test_file_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "onshore.db"
    first = SqliteStore(path)
    version = first.schema_version
    assert version >= 1
    first.put_app(an_app())
    first.put_function(a_function())
    first.put_call(CallRecord("fc-1", "fu-1", "ap-1", 3, 1.0))
    first.put_input(StoredInput("in-1", "fc-1", "fu-1", 0, b"payload"))
    first.close()

    second = SqliteStore(path)
    assert second.schema_version == version  # migrations do not run twice
    assert second.get_app("ap-1") == an_app()
    assert second.get_function("fu-1") == a_function()
    assert [i.payload for i in second.unfinished_inputs()] == [b"payload"]
    second.close()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        conn.close()


def test_task_ids_never_look_like_v2_sandbox_tasks() -> None:
    from onshore import ids

    # The client routes `modal container exec` for a task id ending in "V" to the V2 sandbox API.
    task_ids = [ids.new_id("task") for _ in range(5000)]
    assert all(t.startswith("ta-") and len(t) == 25 and not t.endswith("V") for t in task_ids)
