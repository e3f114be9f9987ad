"""Image builds on the process runtime via the real client: pip/uv layers, env, cache, force, failures."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from onshore.images.pythons import PythonFinder
from tests.conftest import ServerProcess, results, run_modal, write_app

SIX_APP = """
import json
import os
import sys
import time

import modal

image = (
    modal.Image.debian_slim()
    .pip_install("six")
    .env({"GREETING": "hello from the image", "PROBE_DATA_DIR": "DATA_DIR/token.json"})
)
app = modal.App("onshore-test-images-six", image=image)


@app.function()
def probe() -> dict:
    import six

    try:
        open("/usr/onshore-probe", "w")
        usr_writable = True
    except OSError:
        usr_writable = False
    return {
        "six": six.__version__,
        "greeting": os.environ["GREETING"],
        "prefix": sys.prefix,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "usr_writable": usr_writable,
        "sees_data_dir": os.path.exists(os.environ.get("PROBE_DATA_DIR", "/nonexistent")),
    }


@app.local_entrypoint()
def main() -> None:
    print("RESULT probe", json.dumps(probe.remote()))
"""

BUILD_LINE = "RUN python -m pip install six"


def test_pip_layer_env_and_cache(fresh_server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "six_app.py", SIX_APP.replace("DATA_DIR", str(fresh_server.data_dir)))
    fresh_server.start()
    first = run_modal(fresh_server, "run", str(app), timeout=300)
    assert first.returncode == 0, first.output
    # The build streamed to the client: the step, and uv's own output.
    assert BUILD_LINE in first.output and "six==" in first.output, first.output
    probe = results(first)["probe"]
    assert probe["greeting"] == "hello from the image"
    assert probe["six"].count(".") >= 1
    assert probe["prefix"] != sys.prefix and Path(probe["prefix"], "pyvenv.cfg").exists()
    # It ran isolated: its own pid namespace, the code at /root, the host read-only, the data dir hidden.
    assert probe["pid"] < 10 and probe["cwd"] == "/root" and not probe["usr_writable"], probe
    assert not probe["sees_data_dir"], probe

    # The same layers again: a cache hit, nothing rebuilt.
    second = run_modal(fresh_server, "run", str(app))
    assert second.returncode == 0, second.output
    assert BUILD_LINE not in second.output, second.output
    assert results(second)["probe"] == probe

    # The cache survives a restart.
    fresh_server.stop()
    fresh_server.start()
    third = run_modal(fresh_server, "run", str(app))
    assert third.returncode == 0, third.output
    assert BUILD_LINE not in third.output, third.output
    assert results(third)["probe"] == probe

    # MODAL_FORCE_BUILD rebuilds every layer.
    forced = run_modal(fresh_server, "run", str(app), env=fresh_server.env(MODAL_FORCE_BUILD="1"))
    assert forced.returncode == 0, forced.output
    assert BUILD_LINE in forced.output, forced.output
    assert results(forced)["probe"]["six"] == probe["six"]


def test_install_variants(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\ndependencies = ["idna"]\n'
    )
    app = write_app(
        tmp_path,
        "variants_app.py",
        """
        import json

        import modal

        image = (
            modal.Image.debian_slim()
            .uv_pip_install("attrs")
            .pip_install_from_requirements("requirements.txt")
            .pip_install_from_pyproject("pyproject.toml")
            .workdir("/root")
        )
        app = modal.App("onshore-test-images-variants", image=image)


        @app.function()
        def probe() -> dict:
            import attr
            import idna
            import six

            return {"attrs": bool(attr.__name__), "six": bool(six.__version__), "idna": bool(idna.__name__)}


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT probe", json.dumps(probe.remote()))
        """,
    )
    result = run_modal(server, "run", str(app), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.output
    assert results(result)["probe"] == {"attrs": True, "six": True, "idna": True}


def test_failed_build_names_the_command_and_its_output(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "broken_app.py",
        """
        import modal

        image = modal.Image.debian_slim().pip_install("onshore-no-such-package-q7x")
        app = modal.App("onshore-test-images-broken", image=image)


        @app.function()
        def f() -> int:
            return 1
        """,
    )
    result = run_modal(server, "run", str(app) + "::f", timeout=300)
    assert result.returncode != 0, result.output
    error = result.output[result.output.find("Image build for") :]
    assert "pip install onshore-no-such-package-q7x" in error, result.output
    assert (
        "failed with exit code" in error and "onshore-no-such-package-q7x" in error.split("exit code", 1)[1]
    )


def test_missing_apt_package_is_explained(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "apt_app.py",
        """
        import modal

        image = modal.Image.debian_slim().apt_install("onshore-no-such-apt-package")
        app = modal.App("onshore-test-images-apt", image=image)


        @app.function()
        def f() -> int:
            return 1
        """,
    )
    result = run_modal(server, "run", str(app) + "::f", timeout=120)
    assert result.returncode != 0, result.output
    assert "apt package onshore-no-such-apt-package is not installed on this host" in result.output, (
        result.output
    )
    assert "--runtime docker" in result.output


def _other_python() -> str | None:
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    minors = {v.rsplit(".", 1)[0] for v in PythonFinder().interpreters()}
    usable = sorted(m for m in minors - {own} if m in {"3.10", "3.12", "3.13"})
    return usable[-1] if usable else None


@pytest.mark.slow
def test_image_on_another_python_version(server: ServerProcess, tmp_path: Path) -> None:
    version = _other_python()
    if version is None:
        pytest.skip("this host has no Python 3.10, 3.12 or 3.13 interpreter besides the server's own")
    app = write_app(
        tmp_path,
        "version_app.py",
        f"""
        import json
        import sys

        import modal

        image = modal.Image.debian_slim(python_version="{version}").pip_install("six")
        app = modal.App("onshore-test-images-version", image=image)


        @app.function()
        def probe() -> str:
            import six

            return "%d.%d" % sys.version_info[:2] + (" six" if six else "")


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT probe", json.dumps(probe.remote()))
        """,
    )
    result = run_modal(server, "run", str(app), timeout=400)
    assert result.returncode == 0, result.output
    assert results(result)["probe"] == f"{version} six"
    assert f"using the host's Python {version}" in result.output


def test_commands_files_and_workdir(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "pkgsrc" / "mylib").mkdir(parents=True)
    (tmp_path / "pkgsrc" / "mylib" / "__init__.py").write_text("VALUE = 42\n")
    (tmp_path / "data.txt").write_text("data!\n")
    (tmp_path / "helper_mod.py").write_text('WHO = "helper"\n')
    app = write_app(
        tmp_path,
        "files_app.py",
        """
        import json
        import os

        import modal

        image = (
            modal.Image.debian_slim()
            .run_commands("echo hello > /opt/greeting", "mkdir -p /models && echo w > /models/m")
            .run_commands("python -c 'import sys; print(\\"prefix\\", sys.prefix)'")
            .pip_install("six")
            .run_commands("rm /opt/greeting", "python -c 'import six'")
            .add_local_file("data.txt", "/opt/data.txt", copy=True)
            .add_local_dir("pkgsrc", "/opt/pkgsrc", copy=True)
            .add_local_python_source("helper_mod", copy=True)
            .workdir("/work")
        )
        app = modal.App("onshore-test-images-files", image=image)


        @app.function()
        def probe() -> dict:
            import helper_mod

            return {
                "models": open("/models/m").read(),
                "greeting": os.path.exists("/opt/greeting"),
                "data": open("/opt/data.txt").read(),
                "pkg": open("/opt/pkgsrc/mylib/__init__.py").read(),
                "helper": helper_mod.WHO,
                "cwd": os.getcwd(),
                "host_home_hidden": not os.path.exists("/root/.bashrc"),
            }


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT probe", json.dumps(probe.remote()))
        """,
    )
    result = run_modal(server, "run", str(app), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.output
    assert results(result)["probe"] == {
        "models": "w\n",
        "greeting": False,  # deleted by a later layer
        "data": "data!\n",
        "pkg": "VALUE = 42\n",
        "helper": "helper",
        "cwd": "/work",
        "host_home_hidden": True,
    }
    # RUN ran in the image's environment: its python is the image's venv.
    assert "prefix " in result.output and "/images/" in result.output.split("prefix ", 1)[1].split("\n")[0]
    # Nothing the build wrote reached the host.
    assert not Path("/models/m").exists() or Path("/models/m").read_text() != "w\n"


def test_failing_command_fails_the_build(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "failing_app.py",
        """
        import modal

        image = modal.Image.debian_slim().run_commands("echo about to fail && exit 7")
        app = modal.App("onshore-test-images-failing", image=image)


        @app.function()
        def f() -> int:
            return 1
        """,
    )
    result = run_modal(server, "run", str(app) + "::f", timeout=120)
    assert result.returncode != 0, result.output
    error = result.output[result.output.find("Image build for") :]
    assert "RUN echo about to fail && exit 7' failed with exit code 7" in error, result.output
    assert "about to fail" in error.split("exit code 7", 1)[1]


def test_exec_enters_an_isolated_container(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "exec_app.py",
        """
        import json
        import os

        import modal

        image = modal.Image.debian_slim().run_commands("echo from-the-layer > /opt/layer.txt")
        app = modal.App("onshore-test-images-exec", image=image)


        @app.function(scaledown_window=60)
        def task_id() -> str:
            return os.environ["MODAL_TASK_ID"]


        @app.local_entrypoint()
        def main() -> None:
            task = task_id.remote()
            print("RESULT task", json.dumps(task), flush=True)
            import subprocess
            import sys

            for argv in (["cat", "/opt/layer.txt"], ["pwd"], ["sh", "-c", "ls /proc | grep -c '^[0-9]'"]):
                done = subprocess.run(
                    [sys.executable, "-m", "modal", "container", "exec", task, "--", *argv],
                    capture_output=True,
                    text=True,
                )
                print("RESULT " + argv[0], json.dumps(done.stdout.strip() or done.stderr), flush=True)
        """,
    )
    result = run_modal(server, "run", str(app), timeout=300)
    assert result.returncode == 0, result.output
    found = results(result)
    assert found["cat"] == "from-the-layer", found
    assert found["pwd"] == "/root", found
    assert int(found["sh"]) < 10, found  # its own pid namespace: the init, the container, the exec'd shell


def test_run_function_layer(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "run_function_app.py",
        """
        import json
        import os

        import modal


        def download(name: str = "default") -> None:
            os.makedirs("/models", exist_ok=True)
            with open("/models/weights.txt", "w") as f:
                f.write(f"weights for {name}")


        def broken() -> None:
            raise RuntimeError("the download failed")


        image = modal.Image.debian_slim().run_function(download, kwargs={"name": "bert"})
        app = modal.App("onshore-test-images-run-function", image=image)


        @app.function()
        def probe() -> str:
            return open("/models/weights.txt").read()


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT probe", json.dumps(probe.remote()))


        broken_app = modal.App("onshore-test-images-run-function-broken")


        @broken_app.function(image=modal.Image.debian_slim().run_function(broken))
        def never() -> None:
            return None
        """,
    )
    first = run_modal(server, "run", f"{app}::main", timeout=300)
    assert first.returncode == 0, first.output
    assert results(first)["probe"] == "weights for bert"
    assert "running download in container" in first.output
    again = run_modal(server, "run", f"{app}::main", timeout=300)
    assert again.returncode == 0 and results(again)["probe"] == "weights for bert", again.output
    assert "running download in container" not in again.output  # a cache hit
    assert not Path("/models/weights.txt").exists() or "bert" not in Path("/models/weights.txt").read_text()

    failed = run_modal(server, "run", f"{app}::never", timeout=300)
    assert failed.returncode != 0, failed.output
    error = failed.output[failed.output.find("Image build for") :]
    assert "Image.run_function(broken) failed" in error and "the download failed" in error, failed.output


def _local_wheel_sources() -> list[str]:
    from onshore.images import pipconf

    options = pipconf.uv_options(pipconf.pip_settings(), [])
    return [v for v in options if v.startswith(("/", "file://"))]


@pytest.mark.slow
def test_seed_example_transformers_and_torch(server: ServerProcess, tmp_path: Path) -> None:
    """The seed example unchanged: pip_install("transformers", "torch"), with torch from the machine's own
    wheel cache, as pip is configured here (uv does not read pip's configuration: Onshore carries it over)."""
    if not _local_wheel_sources():
        pytest.skip("pip is not configured with a local wheel cache here; torch would be downloaded")
    app = write_app(
        tmp_path,
        "seed_app.py",
        """
        import json

        import modal

        image = modal.Image.debian_slim().pip_install("transformers", "torch")
        app = modal.App("onshore-test-images-seed", image=image)


        @app.function()
        def probe() -> dict:
            import torch
            import transformers

            total = float(torch.ones(3).sum())
            return {"torch": str(torch.__version__), "ok": bool(transformers.__version__), "sum": total}


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT probe", json.dumps(probe.remote()))
        """,
    )
    result = run_modal(server, "run", str(app), timeout=900)
    assert result.returncode == 0, result.output[-3000:]
    probe = results(result)["probe"]
    assert probe["ok"] and probe["sum"] == 3.0, probe
    # The machine's pip settings reached uv: its wheel sources are on the install command line.
    assert any(source in result.output for source in _local_wheel_sources()) or "torch==" in result.output


def test_run_function_container_that_dies_fails_the_build_at_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "dying_build_app.py",
        """
        import os

        import modal

        if not modal.is_local():
            os._exit(3)  # every container of this module ends while importing it


        def setup() -> None:
            return None


        app = modal.App("onshore-test-images-dying-build")


        @app.function(image=modal.Image.debian_slim().run_function(setup))
        def f() -> None:
            return None
        """,
    )
    started = time.monotonic()
    result = run_modal(server, "run", str(app) + "::f", timeout=200)
    assert result.returncode != 0, result.output
    assert "before running the function" in result.output, result.output
    assert time.monotonic() - started < 100  # not the function's 300 s timeout


def test_spare_process_serves_the_next_container_of_an_image(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "spare_app.py",
        """
        import json
        import os
        import time

        import modal

        image = modal.Image.debian_slim().pip_install("six").env({"SPARE_TEST": "1"})
        app = modal.App("onshore-test-images-spare", image=image)


        def _age() -> float:
            with open("/proc/uptime") as f:
                uptime = float(f.read().split()[0])
            with open("/proc/self/stat") as f:
                raw = f.read()
            start_ticks = int(raw[raw.rindex(")") + 2 :].split()[19])
            return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


        @app.function()
        def first() -> float:
            return _age()


        @app.function()
        def second() -> dict:
            import six

            return {"age": _age(), "six": bool(six.__version__), "env": os.environ.get("SPARE_TEST")}


        @app.local_entrypoint()
        def main() -> None:
            first.remote()
            time.sleep(4)  # the server readies a spare for this image meanwhile
            started = time.monotonic()
            found = second.remote()
            found["call_s"] = time.monotonic() - started
            print("RESULT second", json.dumps(found))
        """,
    )
    result = run_modal(server, "run", str(app), timeout=300)
    assert result.returncode == 0, result.output
    found = results(result)["second"]
    assert found["six"] and found["env"] == "1", found
    # Its process existed well before the call: a spare with the image ready and the client imported.
    assert found["age"] > found["call_s"] + 1.0, found


def test_spare_of_an_image_with_files_under_root_shows_them(server: ServerProcess, tmp_path: Path) -> None:
    """A spare's /root is a dir of its own: the image's files there (a deletion in a later layer included)
    are copied in, and the container it becomes sees what a container started afresh sees."""
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "keep.txt").write_text("keep")
    app = write_app(
        tmp_path,
        "root_files_app.py",
        """
        import json
        import os
        import time

        import modal

        image = (
            modal.Image.debian_slim()
            .add_local_file("a.txt", "/root/data/a.txt", copy=True)
            .run_commands("echo b > /root/data/b.txt", "rm /root/data/a.txt")
            .add_local_file("keep.txt", "/root/keep.txt", copy=True)
        )
        app = modal.App("onshore-test-images-root-spare", image=image)


        def _seen() -> dict:
            with open("/proc/uptime") as f:
                uptime = float(f.read().split()[0])
            with open("/proc/self/stat") as f:
                raw = f.read()
            start_ticks = int(raw[raw.rindex(")") + 2 :].split()[19])
            return {
                "data": sorted(os.listdir("/root/data")),
                "b": open("/root/data/b.txt").read(),
                "keep": open("/root/keep.txt").read(),
                "code_here": os.path.exists("/root/root_files_app.py"),
                "age": uptime - start_ticks / os.sysconf("SC_CLK_TCK"),
            }


        @app.function()
        def first() -> dict:
            return _seen()


        @app.function()
        def second() -> dict:
            return _seen()


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT first", json.dumps(first.remote()))
            time.sleep(4)  # the server readies a spare for this image meanwhile
            started = time.monotonic()
            found = second.remote()
            found["call_s"] = time.monotonic() - started
            print("RESULT second", json.dumps(found))
        """,
    )
    result = run_modal(server, "run", str(app), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.output
    first, second = results(result)["first"], results(result)["second"]
    expected = {"data": ["b.txt"], "b": "b\n", "keep": "keep", "code_here": True}
    assert {k: first[k] for k in expected} == expected, first
    assert {k: second[k] for k in expected} == expected, second
    # The second container was a spare: its process existed well before the call.
    assert second["age"] > second["call_s"] + 1.0, second
