"""Docker layers made of committed containers: Image.run_function's, and those of RUN steps with secrets."""

from __future__ import annotations

import collections
import contextlib
import json
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from onshore.images import dockerfile
from onshore.images.dockerfile import Instruction
from onshore.images.model import BuildFailed, BuildJob, LogFn
from onshore.runtimes.docker.engine import (
    BUILD_OUTPUT_TAIL_LINES,
    ContextFile,
    DockerEngine,
    DockerError,
    RunConfig,
)

ADDED = 1  # the kind of a container's filesystem change that adds a path (engine.diff)
DEFAULT_SHELL = ["/bin/sh", "-c"]
# The container a RUN step with secrets is exec'd in: it waits on a stdin nobody writes to, with nothing in
# its config (no environment of its own) that its commit could carry into the image.
_IDLE = ["/bin/sh", "-c", "read _ || true"]
# Removes the empty mount points a build container's binds left in its filesystem (paths deepest first).
_REMOVE = (
    "import os, sys; [os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p) "
    "for p in sys.argv[1:]]"
)


@dataclass(frozen=True)
class CommitBuild:
    """ContainerSpec.image_build of an Image.run_function container that its build commits as the layer: its
    config then holds none of the container's settings (its env reaches its process another way)."""


COMMIT_BUILD = CommitBuild()


@dataclass
class Committed:
    """A build container's filesystem as an image, and the mount points its binds left in it."""

    image_id: str
    placeholders: list[str]


class Committer(Protocol):
    """The runtime that runs Image.run_function containers and can commit them (DockerRuntime)."""

    async def commit(self, task_id: str, message: str) -> Committed:
        """Commit the running build container with this task id, keeping its image's config; BuildFailed says
        why it could not."""
        ...


def placeholders(changes: list[tuple[str, int]], targets: list[str]) -> list[str]:
    """The mount points the engine made for a container's binds (`targets`), which its commit would keep as
    empty files and dirs: the added paths that are a target or a dir above one, with nothing else added or
    changed below them. Deepest first."""
    wanted: set[str] = set()
    for target in targets:
        path = posixpath.normpath(target)
        while path not in ("/", "", "."):
            wanted.add(path)
            path = posixpath.dirname(path)
    found = {path for path, kind in changes if kind == ADDED and path in wanted}
    others = [path for path, kind in changes if path not in found]
    kept = [p for p in found if not any(other.startswith(p + "/") for other in others)]
    return sorted(kept, key=lambda p: (-p.count("/"), p))


def cleanup_lines(paths: list[str], user: str) -> list[str]:
    """Dockerfile lines that remove these placeholders (as root, whatever the image's USER)."""
    if not paths:
        return []
    run = "RUN " + json.dumps(["python", "-c", _REMOVE, *paths])
    return ["USER root", run, f"USER {user}"] if user not in ("", "root", "0", "0:0") else [run]


def steps(instructions: list[Instruction]) -> list[list[Instruction]]:
    """A secrets layer's instructions after FROM, as they are built: each RUN alone (run in a container of
    its own), the others in runs of consecutive instructions (one engine build each)."""
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "RUN" or not out or out[-1][0].keyword == "RUN":
            out.append([ins])
        else:
            out[-1].append(ins)
    return out


def run_argv(ins: Instruction, shell: list[str] | None) -> list[str]:
    """What a RUN step runs: its exec form as written, or its text in the image's shell."""
    return list(ins.args) if ins.exec_form else [*(shell or DEFAULT_SHELL), ins.text]


def step_env(
    secrets: Mapping[str, str], args: Mapping[str, str], image_env: Mapping[str, str]
) -> dict[str, str]:
    """A RUN step's own environment, on top of its image's: the layer's secrets and build args (as the engine
    gives a RUN step its ARGs), neither overriding the image's ENV."""
    return {k: v for k, v in {**secrets, **args}.items() if k not in image_env}


class SecretLayer:
    """Builds a layer whose RUN steps get the layer's secrets: each RUN step runs in a container of its own,
    the secrets in the environment of the command exec'd there (never in a container or image config), and
    that container is committed with its image's config; the other instructions are engine builds."""

    def __init__(
        self,
        engine: DockerEngine,
        job: BuildJob,
        from_line: str,
        context: Mapping[str, ContextFile],
        log: LogFn,
        labels: Mapping[str, str],
    ) -> None:
        """from_line: the layer's FROM line with its parent named by image id; labels: for its containers."""
        self._engine = engine
        self._job = job
        self._from_line = from_line
        self._context = context
        self._log = log
        self._labels = dict(labels)
        self._args: dict[str, str] = {}
        self._made: list[str] = []

    async def build(self, tag: str, labels: Mapping[str, str]) -> str:
        """The layer's image, tagged `tag`, with `labels`; what it made on the way is removed if it fails."""
        job = self._job
        current = job.parent.ref if job.parent is not None else ""
        try:
            for group in steps(job.instructions[1:]):
                if group[0].keyword == "RUN":
                    if not current:
                        current = await self._build_lines(current, [], None, {})
                    current = await self._run(current, group[0])
                else:
                    for ins in group:
                        for key, default in map(
                            dockerfile.split_pair, ins.args if ins.keyword == "ARG" else []
                        ):
                            if key in job.build_args or default:
                                self._args[key] = job.build_args.get(key, default)
                    current = await self._build_lines(current, [ins.line for ins in group], None, {})
            return await self._build_lines(current, [], tag, labels)
        except BaseException:
            for image in reversed(self._made):
                with contextlib.suppress(DockerError):
                    await self._engine.remove_image(image)
            raise

    async def _build_lines(
        self, current: str, lines: list[str], tag: str | None, labels: Mapping[str, str]
    ) -> str:
        """An engine build of `lines` on the image so far (on the FROM line before there is one)."""
        head = [f"FROM {current}", *(f"ARG {key}" for key in self._args)] if current else [self._from_line]
        copies = any(line.split(None, 1)[0].upper() in ("COPY", "ADD") for line in lines)
        image_id = await self._engine.build(
            "\n".join([*head, *lines]) + "\n",
            self._context if copies else {},
            tag,
            self._log,
            build_args={**self._job.build_args, **self._args},
            no_cache=self._job.force,
            labels=labels,
        )
        if tag is None:
            self._made.append(image_id)
        return image_id

    async def _run(self, image: str, ins: Instruction) -> str:
        """Run one RUN step with the secrets in a container of `image`; the committed container's image id."""
        config = await self._engine.image_config(image)
        env = step_env(self._job.secret_env, self._args, config.env)
        self._log(f"{ins.line} (in a container of its own, with the layer's secrets)\n")
        run = RunConfig(
            image=image,
            command=[],
            name=f"onshore-build-{uuid.uuid4().hex[:16]}",
            labels=self._labels,
            network="host",  # as the engine's own builds
            init=False,
            entrypoint=_IDLE,
            stdin_open=True,
            stop_signal="",
        )
        try:
            cid = await self._engine.run(run)
        except DockerError as exc:
            raise BuildFailed(
                f"'{ins.line}': a RUN step with secrets runs in a container that waits in /bin/sh, and the "
                f"image could not start one: {exc}"
            ) from None
        try:
            tail: collections.deque[str] = collections.deque(maxlen=BUILD_OUTPUT_TAIL_LINES)
            pending = [""]

            def output(text: str) -> None:
                self._log(text)
                *lines, pending[0] = (pending[0] + text).split("\n")
                tail.extend(lines)

            result = await self._engine.exec(cid, run_argv(ins, config.shell), env=env, on_output=output)
            if pending[0]:
                tail.append(pending[0])
            if result.exit_code != 0:
                end = "\n".join(tail).rstrip("\n")
                raise BuildFailed(
                    f"'{ins.line}' failed with exit code {result.exit_code}."
                    + (f" The end of its output:\n{end}\n" if end else "")
                )
            await self._engine.stop(cid, 0.0)  # what the step started ends with it, as in an engine build
            image_id = await self._engine.commit(cid, config_of=image, message=ins.line)
            self._made.append(image_id)
            return image_id
        finally:
            with contextlib.suppress(DockerError):
                await self._engine.remove(cid)
