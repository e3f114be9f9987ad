"""with_options / with_concurrency / with_batching variants, @modal.concurrent, @modal.batched and
update_autoscaler, with the real client on a server with an emulated GPU."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_modal, run_python, write_app

APP = """
import json
import os
import time

import modal

app = modal.App("e2e-variants")


@app.function(scaledown_window=30)
def where(seconds: float = 0.0) -> dict:
    time.sleep(seconds)
    return {
        "pid": os.environ["MODAL_TASK_ID"],
        "secret": os.environ.get("FROM_SECRET"),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


@app.function()
@modal.concurrent(max_inputs=10)
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ["MODAL_TASK_ID"]


# One container, so that the batches' sizes show the grouping (with two, the autoscaler's second container
# for the 8 inputs takes some while the first lingers for more).
@app.function(max_containers=1)
@modal.batched(max_batch_size=4, wait_ms=2000)
def sizes(xs: list[int]) -> list[int]:
    return [len(xs)] * len(xs)


@app.cls(scaledown_window=30)
class Model:
    @modal.method()
    def info(self) -> dict:
        return {"pid": os.environ["MODAL_TASK_ID"], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


@app.cls(max_containers=1)
class Batcher:
    @modal.batched(max_batch_size=3, wait_ms=2000)
    def sizes(self, xs: list[int]) -> list[int]:
        return [len(xs)] * len(xs)


@app.function()
def listing() -> list:
    return sorted(os.listdir("/data")) if os.path.isdir("/data") else ["no /data"]


@app.local_entrypoint()
def main() -> None:
    out = {}
    plain = where.remote()
    secret = modal.Secret.from_dict({"FROM_SECRET": "given"})
    varied = where.with_options(secrets=[secret], gpu="T4").remote()
    out["plain"], out["varied"] = plain, varied
    again = where.with_options(secrets=[secret], gpu="T4").remote()
    out["same_variant_again"] = again["pid"] == varied["pid"]
    try:
        where.with_options(timeout=1).remote(5.0)
        out["timeout"] = "no error"
    except modal.exception.FunctionTimeoutError as exc:
        out["timeout"] = "FunctionTimeoutError"
    start = time.monotonic()
    pids = list(nap.map([1.5] * 10))
    out["concurrent"] = {"seconds": time.monotonic() - start, "containers": len(set(pids))}
    start = time.monotonic()
    pids = list(where.with_concurrency(max_inputs=10).map([1.5] * 10))
    seconds = time.monotonic() - start
    out["with_concurrency"] = {"seconds": seconds, "containers": len(set(p["pid"] for p in pids))}
    out["batched"] = list(sizes.map(range(8)))
    out["with_batching"] = list(sizes.with_batching(max_batch_size=2, wait_ms=2000).map(range(6)))
    out["cls_batched"] = list(Batcher().sizes.map(range(6)))
    with modal.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(__import__("io").BytesIO(b"hi"), "/note.txt")
        out["volume_plain"] = listing.remote()
        out["volume_option"] = listing.with_options(volumes={"/data": vol}).remote()
    out["cls_plain"] = Model().info.remote()
    out["cls_gpu"] = Model.with_options(gpu="T4")().info.remote()
    for name, make in [
        ("region", lambda: where.with_options(region="us-east-1").remote()),
        ("cls_region", lambda: Model.with_options(region="us-east-1")().info.remote()),
        ("too_big", lambda: where.with_options(gpu="H100:8").remote()),
    ]:
        try:
            make()
            out[name] = "no error"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def gpu_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", extra_args=["--gpus", "T4:1"]).start()
    try:
        yield server
    finally:
        server.stop()


def test_variants_run_in_their_own_containers_with_their_options(
    gpu_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(tmp_path, "variants.py", APP)
    result = run_modal(gpu_server, "run", str(app), timeout=240)
    assert result.returncode == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    assert out["plain"]["secret"] is None and out["plain"]["gpu"] is None
    assert out["varied"]["secret"] == "given" and out["varied"]["gpu"] == "0"
    assert out["varied"]["pid"] != out["plain"]["pid"]  # each option set has containers of its own
    assert out["same_variant_again"] is True
    assert out["timeout"] == "FunctionTimeoutError"
    # Ten 1.5 s naps on one container that takes ten at once: about one nap, not ten.
    # (Serially they would take 15 s; the bound leaves room for a cold start on a busy machine.)
    assert out["concurrent"]["containers"] == 1 and out["concurrent"]["seconds"] < 9, out["concurrent"]
    conc = out["with_concurrency"]
    assert conc["containers"] == 1 and conc["seconds"] < 9, conc
    assert out["batched"] == [4] * 8  # the 2 s wait lets each batch fill to its size
    assert out["with_batching"] == [2] * 6
    assert out["cls_batched"] == [3] * 6  # a class method's batches
    assert out["volume_plain"] == ["no /data"] and out["volume_option"] == ["note.txt"]
    assert out["cls_plain"]["gpu"] is None and out["cls_gpu"]["gpu"] == "0"
    assert out["cls_gpu"]["pid"] != out["cls_plain"]["pid"]
    assert "Function.with_options(region=...)" in out["region"], out["region"]
    assert "Cls.with_options(region=...)" in out["cls_region"], out["cls_region"]
    assert "cannot run on this server" in out["too_big"] and "1 x T4" in out["too_big"], out["too_big"]


def test_update_autoscaler_changes_a_deployed_functions_warm_containers(
    gpu_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "autoscaled.py",
        """
        import modal

        app = modal.App("e2e-update-autoscaler")

        @app.function()
        def ping() -> str:
            return "pong"
        """,
    )
    deployed = run_modal(gpu_server, "deploy", str(app))
    assert deployed.returncode == 0, deployed.output
    script = write_app(
        tmp_path,
        "update.py",
        """
        import sys

        import modal

        fn = modal.Function.from_name("e2e-update-autoscaler", "ping")
        fn.update_autoscaler(min_containers=int(sys.argv[1]), scaledown_window=2)
        print("UPDATED")
        """,
    )

    def containers() -> int:
        listed = run_modal(gpu_server, "app", "list", "--json")
        rows = [r for r in json.loads(listed.stdout) if r["description"] == "e2e-update-autoscaler"]
        return int(rows[0]["tasks"]) if rows else -1

    try:
        assert containers() == 0
        updated = run_python(gpu_server, script, "2")
        assert "UPDATED" in updated.output, updated.output
        deadline = time.monotonic() + 30
        while containers() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers() == 2  # kept warm with no calls
        updated = run_python(gpu_server, script, "0")
        assert "UPDATED" in updated.output, updated.output
        deadline = time.monotonic() + 30
        while containers() > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers() == 0  # back to zero once its (new, 2 s) scaledown window passed
        redeployed = run_modal(gpu_server, "deploy", str(app))
        assert redeployed.returncode == 0, redeployed.output
    finally:
        run_modal(gpu_server, "app", "stop", "e2e-update-autoscaler", "--yes")
