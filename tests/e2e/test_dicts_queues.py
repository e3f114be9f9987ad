"""Dicts and Queues with the real client: the API from scripts and from containers, blocking gets that wake on
a put by another process, the CLI, durability across a restart, and the client's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, results, run_modal, run_python, write_app

DICT_SCRIPT = """
import json

import modal

d = modal.Dict.from_name("onshore-test-dict", create_if_missing=True)
d.clear()
d["a"] = 1
d.update({"b": [1, 2], (1, 2): {"nested": b"bytes"}})
out = {
    "get": d.get("a"),
    "default": d.get("missing", "fallback"),
    "contains": ["a" in d, "zz" in d],
    "len": d.len(),
    "tuple_key": d[(1, 2)]["nested"].decode(),
    "skip_if_exists": [d.put("a", 99, skip_if_exists=True), d.put("new", 5, skip_if_exists=True)],
    "after_skip": d["a"],
    "pop": d.pop("new"),
    "keys": sorted(map(str, d.keys())),
    "values": len(list(d.values())),
    "items": sorted(str(k) for k, _ in d.items()),
}
try:
    d["missing"]
except KeyError:
    out["keyerror"] = True
with modal.Dict.ephemeral() as e:
    e["x"] = "ephemeral"
    out["ephemeral"] = e["x"]
print("RESULT dict", json.dumps(out))
"""

QUEUE_SCRIPT = """
import json
import queue
import threading
import time

import modal

q = modal.Queue.from_name("onshore-test-queue", create_if_missing=True)
q.clear(all=True)
q.put(1)
q.put_many([2, 3])
q.put("elsewhere", partition="p1")
out = {"len": q.len(), "total": q.len(total=True), "peek": list(q.iterate())}
out["get"] = [q.get(), q.get_many(10), q.get(block=False), q.get(partition="p1")]
started = time.time()
threading.Timer(0.5, lambda: q.put("late")).start()
out["blocking"] = q.get(timeout=10)
out["waited"] = round(time.time() - started, 2)
started = time.time()
try:
    q.get(timeout=0.5)
except queue.Empty:
    out["empty_after"] = round(time.time() - started, 2)
try:
    q.put(1, partition="")
except modal.exception.InvalidError as exc:
    out["bad_partition"] = str(exc)
print("RESULT queue", json.dumps(out))
"""

APP = """
import json

import modal

app = modal.App("onshore-test-kv-app")
jobs = modal.Queue.from_name("onshore-test-jobs", create_if_missing=True)
results = modal.Dict.from_name("onshore-test-results", create_if_missing=True)


@app.function()
def consumer(count: int) -> int:
    done = 0
    while done < count:
        item = jobs.get(timeout=30)  # waits for the producer, which runs at the same time
        results[item] = item * item
        done += 1
    return done


@app.function()
def producer(count: int) -> None:
    import time

    for i in range(count):
        jobs.put(i)
        time.sleep(0.01)


@app.local_entrypoint()
def main() -> None:
    jobs.clear()
    results.clear()
    call = consumer.spawn(20)
    producer.remote(20)
    print("RESULT consumed", call.get())
    print("RESULT squares", json.dumps(sorted(results.values())))
"""


def test_dict_api(server: ServerProcess, tmp_path: Path) -> None:
    result = run_python(server, write_app(tmp_path, "dict_script.py", DICT_SCRIPT))
    assert result.returncode == 0, result.output
    out = results(result)["dict"]
    assert out["get"] == 1 and out["default"] == "fallback" and out["contains"] == [True, False]
    assert out["len"] == 3 and out["tuple_key"] == "bytes"
    assert out["skip_if_exists"] == [False, True] and out["after_skip"] == 1 and out["pop"] == 5
    assert out["keys"] == ["(1, 2)", "a", "b"] and out["values"] == 3
    assert out["items"] == out["keys"]
    assert out["keyerror"] and out["ephemeral"] == "ephemeral"


def test_queue_api_and_blocking_gets(server: ServerProcess, tmp_path: Path) -> None:
    result = run_python(server, write_app(tmp_path, "queue_script.py", QUEUE_SCRIPT))
    assert result.returncode == 0, result.output
    out = results(result)["queue"]
    assert out["len"] == 3 and out["total"] == 4 and out["peek"] == [1, 2, 3]
    assert out["get"] == [1, [2, 3], None, "elsewhere"]
    # The blocking get returned as soon as another thread's put landed, not at its timeout.
    assert out["blocking"] == "late" and 0.4 <= out["waited"] < 3, out
    assert 0.4 <= out["empty_after"] < 3, out
    assert "between 1 and 64" in out["bad_partition"]


def test_producer_and_consumer_containers_share_a_queue_and_a_dict(
    server: ServerProcess, tmp_path: Path
) -> None:
    result = run_modal(server, "run", str(write_app(tmp_path, "kv_app.py", APP)), timeout=180)
    assert result.returncode == 0, result.output
    found = results(result)
    assert found["consumed"] == 20
    assert found["squares"] == sorted(i * i for i in range(20))


def test_cli(server: ServerProcess) -> None:
    def modal(*args: str) -> str:
        done = run_modal(server, *args, timeout=60)
        assert done.returncode == 0, done.output
        return done.stdout

    def names(kind: str) -> list[str]:
        return [row["name"] for row in json.loads(modal(kind, "list", "--json"))]

    modal("dict", "create", "onshore-test-cli-dict")
    assert "onshore-test-cli-dict" in names("dict")
    env = server.env()
    script = (
        "import modal; d = modal.Dict.from_name('onshore-test-cli-dict'); d['k'] = 'v'; "
        "q = modal.Queue.from_name('onshore-test-cli-queue', create_if_missing=True); q.put_many([1, 2, 3])"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert "v" in modal("dict", "get", "onshore-test-cli-dict", "k")
    assert "k" in modal("dict", "items", "onshore-test-cli-dict")
    modal("dict", "clear", "onshore-test-cli-dict", "-y")
    assert "k" not in modal("dict", "items", "onshore-test-cli-dict")
    modal("dict", "delete", "onshore-test-cli-dict", "-y")
    assert "onshore-test-cli-dict" not in names("dict")

    assert "onshore-test-cli-queue" in names("queue")
    assert modal("queue", "len", "onshore-test-cli-queue").strip() == "3"
    assert modal("queue", "peek", "onshore-test-cli-queue", "2").split() == ["1", "2"]
    modal("queue", "clear", "onshore-test-cli-queue", "-y")
    assert modal("queue", "len", "onshore-test-cli-queue").strip() == "0"
    modal("queue", "delete", "onshore-test-cli-queue", "-y")
    assert "onshore-test-cli-queue" not in names("queue")
    missing = run_modal(server, "dict", "get", "onshore-test-no-such-dict", "k")
    assert missing.returncode != 0 and "not found" in missing.output.lower(), missing.output


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for proc in servers:
        proc.stop()


def test_contents_survive_a_restart(tmp_path: Path, restartable: list[ServerProcess]) -> None:
    first = ServerProcess(tmp_path / "data").start()
    restartable.append(first)
    write = (
        "import modal\n"
        "d = modal.Dict.from_name('onshore-test-durable', create_if_missing=True)\n"
        "d.update({'kept': [1, 2, 3]})\n"
        "q = modal.Queue.from_name('onshore-test-durable-q', create_if_missing=True)\n"
        "q.put_many(['first', 'second'])\n"
    )
    assert run_python(first, write_app(tmp_path, "write.py", write)).returncode == 0
    first.stop(sig=9)  # not a clean stop: what was acknowledged is on disk
    second = ServerProcess(tmp_path / "data").start()
    restartable.append(second)
    read = (
        "import json, modal\n"
        "d = modal.Dict.from_name('onshore-test-durable')\n"
        "q = modal.Queue.from_name('onshore-test-durable-q')\n"
        "print('RESULT read', json.dumps([d['kept'], q.get_many(5, block=False)]))\n"
    )
    result = run_python(second, write_app(tmp_path, "read.py", read))
    assert result.returncode == 0, result.output
    assert results(result)["read"] == [[1, 2, 3], ["first", "second"]]


def test_a_full_partition_and_an_oversized_value_give_the_clients_errors(
    server: ServerProcess, tmp_path: Path
) -> None:
    script = """
import json
import queue

import modal

q = modal.Queue.from_name("onshore-test-full", create_if_missing=True)
q.clear(all=True)
q.put_many(list(range(5000)))
out = {}
try:
    q.put(1, block=False)
except queue.Full:
    out["full"] = True
try:
    q.put(1, timeout=1.0)
except queue.Full:
    out["full_after_timeout"] = True
d = modal.Dict.from_name("onshore-test-big", create_if_missing=True)
try:
    d["big"] = b"x" * (2 * 1024 * 1024)
except Exception as exc:
    out["big"] = type(exc).__name__ + ": " + str(exc)
print("RESULT errors", json.dumps(out))
"""
    started = time.monotonic()
    result = run_python(server, write_app(tmp_path, "errors.py", script), timeout=120)
    assert result.returncode == 0, result.output
    out = results(result)["errors"]
    assert out["full"] and out["full_after_timeout"], out
    assert out["big"] == "RequestSizeError: Dict.put request is too large", out
    assert time.monotonic() - started < 60
    assert json.dumps(out)
