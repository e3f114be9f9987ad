"""The docker runtime's pure parts: layer Dockerfiles and contexts, secret steps, mount points, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from onshore.images import dockerfile
from onshore.images.model import BuildFailed, BuildFunction, BuildJob
from onshore.models import ImageConfig
from onshore.runtimes.docker.builder import (
    DockerBuilder,
    build_context,
    describe_failure,
    dockerfile_for,
    image_tag,
)
from onshore.runtimes.docker.commit import cleanup_lines, placeholders, run_argv, step_env, steps
from onshore.runtimes.docker.engine import BuildError, ContextFile, DockerEngine, ExitStatus
from onshore.runtimes.docker.exec import cli_host
from onshore.runtimes.docker.runtime import exit_code, server_labels

PARENT = ImageConfig(python_version="3.11.2", ref="sha256:" + "ab" * 32)


def job(commands: list[str], parent: ImageConfig | None = None, **extra: object) -> BuildJob:
    return BuildJob(
        image_id="im-1",
        content_hash="c0ffee" * 10,
        instructions=dockerfile.parse(commands),
        parent=parent,
        **extra,  # type: ignore[arg-type]
    )


def test_dockerfile_names_the_parent_by_its_image_id() -> None:
    layer = job(["FROM base", "RUN python -m pip install six", "ENV A=1 B=2", "WORKDIR /work"], PARENT)
    assert dockerfile_for(layer) == (
        f"FROM {PARENT.ref}\nRUN python -m pip install six\nENV A=1 B=2\nWORKDIR /work\n"
    )
    base = job(["FROM python:3.11.12-slim-bookworm", "RUN apt-get update", 'CMD ["sleep", "10"]'])
    assert dockerfile_for(base).splitlines() == [
        "FROM python:3.11.12-slim-bookworm",
        "RUN apt-get update",
        'CMD ["sleep", "10"]',
    ]
    assert image_tag("c0ffee" * 10) == "onshore/image:" + ("c0ffee" * 4)


@pytest.mark.parametrize(
    ("commands", "parent", "message"),
    [
        (["FROM base", "RUN true"], None, "'FROM base' needs a base image"),
        (["FROM debian:12", "RUN true"], PARENT, "starts with 'FROM base'"),
        (["RUN true"], None, "must be FROM"),
        (["FROM debian:12", "FROM debian:11"], None, "multi-stage builds are not supported"),
        (["FROM base"], ImageConfig(python_version="3.11.2"), "not built by the docker runtime"),
    ],
)
def test_bad_layers_are_refused(commands: list[str], parent: ImageConfig | None, message: str) -> None:
    with pytest.raises(BuildFailed, match=message):
        dockerfile_for(job(commands, parent))


def test_context_holds_the_mount_tree_and_the_inline_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "opt" / "pkg").mkdir(parents=True)
    (tree / "opt" / "data.txt").write_text("data\n")
    (tree / "opt" / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "opt" / "pkg" / "run.sh").chmod(0o755)
    layer = job(
        ["FROM base", "COPY . /"], PARENT, context_dir=tree, context_files={"/.requirements.txt": b"six\n"}
    )
    assert build_context(layer) == {
        "opt/data.txt": ContextFile(b"data\n", 0o644),
        "opt/pkg/run.sh": ContextFile(b"#!/bin/sh\n", 0o755),
        ".requirements.txt": ContextFile(b"six\n"),
    }
    (tree / "link").symlink_to("opt/data.txt")
    with pytest.raises(BuildFailed, match="/link, which is not a regular file"):
        build_context(layer)


def test_secret_layers_run_each_run_step_alone_with_the_secrets_in_its_own_environment() -> None:
    layer = job(
        ["FROM base", "ARG V=1", "ENV A=1", "RUN echo $TOKEN", 'RUN ["pip", "install", "x"]', "COPY a /a"],
        PARENT,
    )
    grouped = [[ins.line for ins in group] for group in steps(layer.instructions[1:])]
    assert grouped == [
        ["ARG V=1", "ENV A=1"],
        ["RUN echo $TOKEN"],
        ['RUN ["pip", "install", "x"]'],
        ["COPY a /a"],
    ]
    shell_form, exec_form = layer.instructions[3], layer.instructions[4]
    assert run_argv(shell_form, None) == ["/bin/sh", "-c", "echo $TOKEN"]
    assert run_argv(shell_form, ["/bin/bash", "-lc"]) == ["/bin/bash", "-lc", "echo $TOKEN"]
    assert run_argv(exec_form, None) == ["pip", "install", "x"]
    # Build args and secrets are the step's; the image's ENV wins over both, as in an engine build.
    env = step_env({"TOKEN": "s", "A": "secret-a"}, {"V": "2"}, {"A": "1", "PATH": "/bin"})
    assert env == {"TOKEN": "s", "V": "2"}


def test_the_empty_mount_points_of_a_build_container_are_found_and_removed() -> None:
    changes = [
        ("/models", 1),
        ("/models/weights.txt", 1),
        ("/onshore", 1),
        ("/onshore/container-arguments", 1),
        ("/onshore/server", 1),
        ("/pkg", 1),
        ("/root", 0),
        ("/root/__pycache__", 1),
        ("/root/app.py", 1),
        ("/root/lib", 1),
        ("/srv", 1),
        ("/srv/bound", 1),
        ("/srv/written.txt", 1),  # the function wrote next to a mount point: /srv stays
    ]
    targets = [
        "/pkg",
        "/onshore/container-arguments",
        "/onshore/server",
        "/root/app.py",
        "/root/__pycache__",
        "/root/lib",
        "/srv/bound",
    ]
    found = placeholders(changes, targets)
    assert found == [
        "/onshore/container-arguments",
        "/onshore/server",
        "/root/__pycache__",
        "/root/app.py",
        "/root/lib",
        "/srv/bound",
        "/onshore",
        "/pkg",
    ]
    assert cleanup_lines([], "") == []
    (run,) = cleanup_lines(found, "")
    assert run.startswith('RUN ["python", "-c", ') and run.endswith('"/onshore", "/pkg"]')
    assert cleanup_lines(found, "1000:1000")[::2] == ["USER root", "USER 1000:1000"]


async def test_run_function_needs_its_runner_and_a_base_image(tmp_path: Path) -> None:
    function = BuildFunction("fu-1", b"def f(): pass", b"", b"")
    # Refused before any engine call: this engine does not exist.
    builder = DockerBuilder(DockerEngine(f"unix://{tmp_path}/none.sock"))
    with pytest.raises(BuildFailed, match="the build function was not created"):
        await builder.build(job(["FROM base"], PARENT, build_function=function), print)


def test_failures_name_the_command_its_exit_code_and_output() -> None:
    error = BuildError(
        "image build t failed at `RUN exit 7`: The command '/bin/sh -c exit 7' returned a non-zero code: 7",
        "RUN exit 7",
        "one\ntwo",
    )
    assert (
        describe_failure(error) == "'RUN exit 7' failed with exit code 7. The end of its output:\none\ntwo\n"
    )
    pull = BuildError("image build t failed: pull access denied for nothere", "", "")
    assert describe_failure(pull).startswith("The Docker engine could not build this image: ")


def test_exit_codes_follow_the_process_runtime() -> None:
    assert exit_code(ExitStatus(0, False)) == 0
    assert exit_code(ExitStatus(3, False)) == 3
    assert exit_code(ExitStatus(137, False)) == -9
    assert exit_code(ExitStatus(130, False)) == -2
    assert exit_code(ExitStatus(137, True)) == -9
    assert exit_code(ExitStatus(255, False)) == 255


def test_labels_and_cli_host(tmp_path: Path) -> None:
    labels = server_labels(tmp_path)
    assert labels == server_labels(tmp_path / "." / "")
    assert labels != server_labels(tmp_path / "other")
    assert cli_host("http://10.0.0.1:2375") == "tcp://10.0.0.1:2375"
    assert cli_host("https://h:2376") == "tcp://h:2376"
    assert cli_host("unix:///run/docker.sock") == "unix:///run/docker.sock"
