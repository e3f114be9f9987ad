"""Volumes with the real client: the file API (v1 and v2) from a script, the `modal volume` CLI, writers and
readers in containers with commit and reload as Modal documents them, concurrent committers, read-only
mounts, background commits at exit, and durability across a restart."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, results, run_modal, run_python, write_app

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="volumes in containers are overlays the server mounts: it must run as root"
)

API_SCRIPT = """
import io
import json

import modal

out = {}
big = bytes(range(256)) * (4 * 1024 * 20 + 3)  # 20 MiB and a bit: three v2 blocks, a blob for v1
# Blocks that end in zero bytes, and one all zeros: the v2 client leaves trailing zeros out of its uploads.
block = 8 * 1024 * 1024
zeros = b"z" * 1000 + bytes(block - 1000) + bytes(block) + b"tail" + bytes(100)
for version in (1, 2):
    name = f"onshore-test-api-v{version}"
    try:
        modal.Volume.objects.delete(name)
    except modal.exception.NotFoundError:
        pass
    vol = modal.Volume.from_name(name, create_if_missing=True, version=version)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"hello"), "/x/hello.txt")
        batch.put_file(io.BytesIO(big), "/big.bin")
        batch.put_file(io.BytesIO(zeros), "/zeros.bin")
    out[f"v{version}_zeros"] = b"".join(vol.read_file("zeros.bin")) == zeros
    vol.remove_file("zeros.bin")
    try:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"again"), "/x/hello.txt")
    except FileExistsError:
        out[f"v{version}_exists"] = True
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"forced"), "/x/hello.txt")
    out[f"v{version}_big"] = b"".join(vol.read_file("big.bin")) == big
    out[f"v{version}_hello"] = b"".join(vol.read_file("/x/hello.txt")).decode()
    out[f"v{version}_tree"] = sorted([e.path, e.type.name, e.size] for e in vol.listdir("/", recursive=True))
    out[f"v{version}_top"] = sorted(e.path for e in vol.listdir("/"))
    vol.copy_files(["x/hello.txt"], "copy.txt")
    if version == 2:
        vol.copy_files(["x"], "y", recursive=True)
    vol.remove_file("big.bin")
    missing = (("rm", lambda: vol.remove_file("nope")), ("read", lambda: list(vol.read_file("nope"))))
    for what, call in missing:
        try:
            call()
        except FileNotFoundError:
            out[f"v{version}_{what}_missing"] = True
    try:
        vol.remove_file("x")
    except modal.exception.InvalidError as exc:
        out[f"v{version}_rm_dir"] = str(exc)
    out[f"v{version}_after"] = sorted(e.path for e in vol.listdir("/", recursive=True))
    out[f"v{version}_copy"] = b"".join(vol.read_file("copy.txt")).decode()
try:
    modal.Volume.from_name("onshore-test-api-v1", version=2).hydrate()
except modal.exception.InvalidError as exc:
    out["wrong_version"] = str(exc)
with modal.Volume.ephemeral() as eph:
    with eph.batch_upload() as b:
        b.put_file(io.BytesIO(b"e"), "e.txt")
    out["ephemeral"] = [e.path for e in eph.listdir("/")]
print("RESULT api", json.dumps(out))
"""


def test_file_api_v1_and_v2(server: ServerProcess, tmp_path: Path) -> None:
    result = run_python(server, write_app(tmp_path, "volume_api.py", API_SCRIPT), timeout=180)
    assert result.returncode == 0, result.output
    out = results(result)["api"]
    big = 256 * (4 * 1024 * 20 + 3)
    for v in ("v1", "v2"):
        assert out[f"{v}_exists"] and out[f"{v}_big"] and out[f"{v}_hello"] == "forced"
        assert out[f"{v}_zeros"]
        assert out[f"{v}_tree"] == [
            ["big.bin", "FILE", big],
            ["x", "DIRECTORY", 0],
            ["x/hello.txt", "FILE", 6],
        ]
        assert out[f"{v}_top"] == ["big.bin", "x"]
        assert out[f"{v}_rm_missing"] and out[f"{v}_read_missing"]
        assert "non-empty directory" in out[f"{v}_rm_dir"]
        assert out[f"{v}_copy"] == "forced"
    assert out["v1_after"] == ["copy.txt", "x", "x/hello.txt"]
    assert out["v2_after"] == ["copy.txt", "x", "x/hello.txt", "y", "y/hello.txt"]
    assert "has version v1, not v2" in out["wrong_version"]
    assert out["ephemeral"] == ["e.txt"]


def test_cli(server: ServerProcess, tmp_path: Path) -> None:
    def modal(*args: str) -> str:
        done = run_modal(server, *args, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.output
        return done.stdout

    def names() -> list[str]:
        return [row["name"] for row in json.loads(modal("volume", "list", "--json"))]

    def cat(path: str) -> str:  # the file on stdout, then the CLI's own "✓ Finished downloading" line
        return modal("volume", "get", "onshore-test-cli-vol", path, "-").split("✓")[0]

    (tmp_path / "one.txt").write_text("one")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    modal("volume", "create", "onshore-test-cli-vol")
    assert "onshore-test-cli-vol" in names()
    modal("volume", "put", "onshore-test-cli-vol", "one.txt", "/one.txt")
    modal("volume", "put", "onshore-test-cli-vol", "tree", "/tree")
    assert modal("volume", "ls", "onshore-test-cli-vol").split() == ["one.txt", "tree"]
    assert modal("volume", "ls", "onshore-test-cli-vol", "/tree").split() == ["tree/a.txt", "tree/sub"]
    assert cat("/one.txt") == "one"
    again = run_modal(server, "volume", "put", "onshore-test-cli-vol", "one.txt", "/one.txt", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.output, again.output
    (tmp_path / "out").mkdir()
    modal("volume", "get", "onshore-test-cli-vol", "/tree", "out")
    assert (tmp_path / "out" / "tree" / "sub" / "b.txt").read_text() == "b"
    modal("volume", "cp", "onshore-test-cli-vol", "/one.txt", "/two.txt")
    assert cat("/two.txt") == "one"
    refused = run_modal(server, "volume", "rm", "onshore-test-cli-vol", "/tree")
    assert refused.returncode != 0 and "non-empty directory" in refused.output, refused.output
    modal("volume", "rm", "-r", "onshore-test-cli-vol", "/tree")
    modal("volume", "rm", "onshore-test-cli-vol", "/one.txt")
    assert modal("volume", "ls", "onshore-test-cli-vol").split() == ["two.txt"]
    modal("volume", "rename", "-y", "onshore-test-cli-vol", "onshore-test-cli-vol2")
    assert "onshore-test-cli-vol2" in names() and "onshore-test-cli-vol" not in names()
    modal("volume", "delete", "-y", "onshore-test-cli-vol2")
    assert "onshore-test-cli-vol2" not in names()
    missing = run_modal(server, "volume", "ls", "onshore-test-no-such-vol")
    assert missing.returncode != 0 and "not found" in missing.output.lower(), missing.output


CONTAINERS_APP = """
import json
import os
import time

import modal

app = modal.App("onshore-test-volumes")
vol = modal.Volume.from_name("onshore-test-containers-vol", create_if_missing=True)


@app.function(volumes={"/data": vol})
def write(name: str, text: str) -> list:
    with open(f"/data/{name}", "w") as f:
        f.write(text)
    vol.commit()
    return sorted(os.listdir("/data"))


@app.function(volumes={"/data": vol})
def read(name: str) -> str:
    vol.reload()
    with open(f"/data/{name}") as f:
        return f.read()


@app.function(volumes={"/data": vol})
def reload_with_open_file() -> str:
    with open("/data/held.txt", "w"):
        try:
            vol.reload()
            return "reloaded"
        except RuntimeError as exc:
            return str(exc)


@app.function(volumes={"/deep/mount/point": vol})
def committer(name: str, delay: float) -> str:
    # Both containers see the same commit when they start, then commit one after the other.
    with open(f"/deep/mount/point/own-{name}.txt", "w") as f:
        f.write(name)
    time.sleep(delay)
    with open("/deep/mount/point/shared.txt", "w") as f:
        f.write(f"from {name}")
    vol.commit()
    return name


@app.function(volumes={"/data": vol})
def change_without_commit() -> str:
    with open("/data/at-exit.txt", "w") as f:
        f.write("committed as the container ended")
    os.remove("/data/own-a.txt")
    os.makedirs("/data/nested/dir")
    os.symlink("../at-exit.txt", "/data/nested/link")
    return "changed"


@app.function(volumes={"/ro": vol.read_only()})
def read_only() -> dict:
    try:
        open("/ro/x.txt", "w")
        wrote = "wrote"
    except OSError as exc:
        wrote = exc.strerror
    return {"write": wrote, "seen": sorted(os.listdir("/ro"))}


@app.function(volumes={"/home/ada": vol.with_mount_options(sub_path="/users/ada")})
def in_sub_path() -> list:
    with open("/home/ada/profile.txt", "w") as f:
        f.write("ada")
    vol.commit()
    return sorted(os.listdir("/home/ada"))


@app.cls(volumes={"/weights": vol})
class Model:
    @modal.enter()
    def load(self) -> None:
        self.note = open("/weights/hello.txt").read()

    @modal.method()
    def predict(self) -> str:
        return self.note


@app.function(volumes={"/data": vol})
def look() -> dict:
    files = {}
    for root, _, names in os.walk("/data"):
        for n in names:
            path = os.path.join(root, n)
            files[os.path.relpath(path, "/data")] = open(path).read()
    return files


@app.local_entrypoint()
def main(step: str) -> None:
    if step == "one":
        print("RESULT write", json.dumps(write.remote("hello.txt", "hi there")))
        print("RESULT read", json.dumps(read.remote("hello.txt")))
        print("RESULT busy", json.dumps(reload_with_open_file.remote()))
        print("RESULT committers", json.dumps(list(committer.starmap([("a", 0.2), ("b", 2.0)]))))
        print("RESULT look", json.dumps(look.remote()))
        print("RESULT change", json.dumps(change_without_commit.remote()))
    else:
        print("RESULT ro", json.dumps(read_only.remote()))
        print("RESULT cls", json.dumps(Model().predict.remote()))
        print("RESULT sub", json.dumps(in_sub_path.remote()))
        print("RESULT final", json.dumps(look.remote()))
"""


@needs_root
def test_containers_commit_and_reload(server: ServerProcess, tmp_path: Path) -> None:
    run_modal(server, "volume", "delete", "-y", "onshore-test-containers-vol")
    app = write_app(tmp_path, "volumes_app.py", CONTAINERS_APP)
    first = run_modal(server, "run", str(app), "--step", "one", timeout=240)
    assert first.returncode == 0, first.output
    out = results(first)
    assert out["write"] == ["hello.txt"]
    assert out["read"] == "hi there"  # another container, after its reload()
    assert "there are open files preventing the operation" in out["busy"]
    assert out["committers"] == ["a", "b"]
    # Both containers' own files survive; of the file both wrote, the later commit wins.
    seen = out["look"]
    assert seen["own-a.txt"] == "a" and seen["own-b.txt"] == "b" and seen["shared.txt"] == "from b", seen
    assert out["change"] == "changed"
    # The changes of change_without_commit were committed in the background as its container ended.
    second = run_modal(server, "run", str(app), "--step", "two", timeout=240)
    assert second.returncode == 0, second.output
    out = results(second)
    assert out["ro"]["write"] == "Read-only file system" and "at-exit.txt" in out["ro"]["seen"]
    assert out["cls"] == "hi there"  # a class's @enter read it from its mount
    assert out["sub"] == ["profile.txt"]  # only that directory of the volume, created for the mount
    final = out["final"]
    assert "own-a.txt" not in final and final["at-exit.txt"] == "committed as the container ended"
    assert final["nested/link"] == "committed as the container ended"  # the symlink, followed
    listing = run_modal(server, "volume", "ls", "onshore-test-containers-vol", "/nested")
    assert listing.stdout.split() == ["nested/dir", "nested/link"], listing.output
    listing = run_modal(server, "volume", "ls", "onshore-test-containers-vol", "/users/ada")
    assert listing.stdout.split() == ["users/ada/profile.txt"], listing.output


@pytest.fixture
def restartable() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for proc in servers:
        proc.stop()


def test_volumes_survive_a_restart(tmp_path: Path, restartable: list[ServerProcess]) -> None:
    first = ServerProcess(tmp_path / "data").start()
    restartable.append(first)
    (tmp_path / "f.txt").write_text("kept")
    for args in (("create", "onshore-test-durable"), ("put", "onshore-test-durable", "f.txt", "/d/f.txt")):
        done = run_modal(first, "volume", *args, cwd=tmp_path)
        assert done.returncode == 0, done.output
    first.stop()
    second = ServerProcess(tmp_path / "data").start()
    restartable.append(second)
    got = run_modal(second, "volume", "get", "onshore-test-durable", "/d/f.txt", "-")
    assert got.returncode == 0 and got.stdout.startswith("kept✓"), got.output


RUN_FUNCTION_APP = """
import json

import modal

vol = modal.Volume.from_name("onshore-test-build-vol", create_if_missing=True)


def build_step() -> None:
    import os
    import shutil

    os.makedirs("/opt/weights", exist_ok=True)
    shutil.copy("/vol/weights.txt", "/opt/weights/weights.txt")
    with open("/vol/built.txt", "w") as f:
        f.write("written by the build")
    vol.commit()


image = modal.Image.debian_slim().run_function(build_step, volumes={"/vol": vol})
app = modal.App("onshore-test-build-volume", image=image)


@app.function()
def check() -> list:
    import os

    return [open("/opt/weights/weights.txt").read(), os.path.exists("/vol")]


@app.local_entrypoint()
def main() -> None:
    print("RESULT image", json.dumps(check.remote()))
"""


@needs_root
def test_image_run_function_mounts_a_volume(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_text("w=42")
    for args in (
        ("create", "onshore-test-build-vol"),
        ("put", "-f", "onshore-test-build-vol", "w.txt", "/weights.txt"),
    ):
        run_modal(server, "volume", *args, cwd=tmp_path)
    result = run_modal(server, "run", str(write_app(tmp_path, "build_app.py", RUN_FUNCTION_APP)), timeout=300)
    assert result.returncode == 0, result.output
    # The build read the volume into the image (the volume itself is not part of the image), and committed.
    assert results(result)["image"] == ["w=42", False]
    listing = run_modal(server, "volume", "ls", "onshore-test-build-vol")
    assert listing.stdout.split() == ["built.txt", "weights.txt"], listing.output


DISK_FULL_APP = """
import json

import modal

app = modal.App("onshore-test-disk-full")
vol = modal.Volume.from_name("onshore-test-full-vol", create_if_missing=True)


@app.function(volumes={"/data": vol})
def fill() -> list:
    out = []
    with open("/data/small.txt", "w") as f:
        f.write("fits")
    vol.commit()
    out.append("small committed")
    with open("/data/big.bin", "wb") as f:
        f.write(b"x" * 30 * 1024 * 1024)  # fits in the upper dir; its copy into the volume's store does not
    try:
        vol.commit()
        out.append("big committed")
    except modal.exception.ResourceExhaustedError as exc:
        out.append(str(exc))
    return out


@app.local_entrypoint()
def main() -> None:
    print("RESULT fill", json.dumps(fill.remote()))
"""


@pytest.fixture
def small_volume_disk(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose volumes folder is a 48 MiB tmpfs."""
    folder = tmp_path / "data" / "volumes"
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)], check=True)
    try:
        yield tmp_path / "data"
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@needs_root
def test_a_full_disk_fails_the_commit_and_keeps_the_last_one(
    small_volume_disk: Path, tmp_path: Path, restartable: list[ServerProcess]
) -> None:
    server = ServerProcess(small_volume_disk).start()
    restartable.append(server)
    result = run_modal(server, "run", str(write_app(tmp_path, "full_app.py", DISK_FULL_APP)), timeout=240)
    assert result.returncode == 0, result.output
    small, failed = results(result)["fill"]
    assert small == "small committed"
    assert "No space left on device" in failed and "volume file" in failed, failed
    listing = run_modal(server, "volume", "ls", "onshore-test-full-vol")
    assert listing.stdout.split() == ["small.txt"], listing.output
    # Nothing half-written is left in the store.
    objects = small_volume_disk / "volumes" / "objects"
    assert not [p for p in objects.iterdir() if p.name.endswith(".upload")]


SPARE_APP = """
import modal

app = modal.App("onshore-test-volume-spare")
vol = modal.Volume.from_name("onshore-test-spare-vol", create_if_missing=True)


@app.function(volumes={"/data": vol})
def write() -> str:
    open("/data/from-spare.txt", "w").write("spare")
    vol.commit()
    return open("/data/from-spare.txt").read()


@app.local_entrypoint()
def main() -> None:
    print("RESULT wrote", '"' + write.remote() + '"')
"""


@needs_root
def test_a_spare_process_takes_a_container_with_volumes(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """A spare's sandbox exists before its container's volumes are known: they are mounted into it at
    hand-over, so a function with volumes still starts warm."""
    server = fresh_server.start()
    result = run_modal(server, "run", str(write_app(tmp_path, "spare_app.py", SPARE_APP)), timeout=120)
    assert result.returncode == 0, result.output
    assert results(result)["wrote"] == "spare"
    log = server.log_text()
    task = next(iter(server.container_pids()))
    assert f"container {task} starts from a spare process" in log, log[-3000:]
    listing = run_modal(server, "volume", "ls", "onshore-test-spare-vol")
    assert listing.stdout.split() == ["from-spare.txt"], listing.output
