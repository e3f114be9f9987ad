"""Build image layers for the docker runtime: each layer is a real image, built by the Docker engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

from onshore.images.dockerfile import Instruction
from onshore.images.model import BuildFailed, BuildJob, LogFn
from onshore.models import ImageConfig
from onshore.runtimes.docker.commit import COMMIT_BUILD, Committed, Committer, SecretLayer, cleanup_lines
from onshore.runtimes.docker.engine import (
    BuildError,
    ContextFile,
    DockerEngine,
    DockerError,
    RunConfig,
)

IMAGE_REPOSITORY = "onshore/image"
LABEL_CONTENT_HASH = "org.onshore.image.content-hash"
LABEL_ROLE = "org.onshore.role"
_PYTHON_PROGRAM = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
_PROBE_SECONDS = 120.0
_EXIT_CODE = re.compile(r"returned a non-zero code: (\d+)")


def image_tag(content_hash: str) -> str:
    """The tag a layer's image gets in the engine: its content hash names it."""
    return f"{IMAGE_REPOSITORY}:{content_hash[:24]}"


def dockerfile_for(job: BuildJob) -> str:
    """The layer's Dockerfile: its commands, with `FROM base` naming the parent image by its id."""
    instructions = job.instructions
    if not instructions and job.build_function is not None:  # Image.run_function: the function is the layer
        instructions = [Instruction("FROM", "base", ["base"])]
    if not instructions or instructions[0].keyword != "FROM":
        raise BuildFailed("The first command of an image layer must be FROM")
    if any(ins.keyword == "FROM" for ins in instructions[1:]):
        extra = next(ins.line for ins in instructions[1:] if ins.keyword == "FROM")
        raise BuildFailed(f"'{extra}': multi-stage builds are not supported")
    first = instructions[0]
    if job.parent is not None:
        if first.args[:1] != ["base"]:
            raise BuildFailed(f"'{first.line}': a layer on a base image starts with 'FROM base'")
        if not job.parent.ref:
            raise BuildFailed(
                "The base image of this layer was not built by the docker runtime (it has no Docker image); "
                "build it again on this server (MODAL_FORCE_BUILD=1)."
            )
        lines = [f"FROM {job.parent.ref}"]
    else:
        if first.args[:1] == ["base"]:
            raise BuildFailed(f"'{first.line}': 'FROM base' needs a base image, and this layer has none")
        lines = [first.line]
    lines += [ins.line for ins in instructions[1:]]
    return "\n".join(lines) + "\n"


def build_context(job: BuildJob) -> dict[str, ContextFile]:
    """The build context: the context mount's files (job.context_dir is laid out as '/'), then the inline
    context files, each by its path relative to '/'."""
    files: dict[str, ContextFile] = {}
    root = job.context_dir
    if root is not None and root.is_dir():
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    rel = "/" + path.relative_to(root).as_posix()
                    raise BuildFailed(f"The build context holds {rel}, which is not a regular file")
                rel = path.relative_to(root).as_posix()
                files[rel] = ContextFile(path.read_bytes(), stat.S_IMODE(info.st_mode))
    for name, data in job.context_files.items():
        files[posixpath.normpath(name.lstrip("/"))] = ContextFile(data)
    return files


def describe_failure(exc: BuildError) -> str:
    """A failed step as the client shows it: the command, its exit code, the end of its output."""
    if not exc.step:
        return f"The Docker engine could not build this image: {exc}"
    code = _EXIT_CODE.search(str(exc))
    how = f"failed with exit code {code.group(1)}" if code else f"failed: {str(exc).splitlines()[0]}"
    tail = exc.output_tail.rstrip("\n")
    return f"'{exc.step}' {how}." + (f" The end of its output:\n{tail}\n" if tail else "")


class DockerBuilder:
    """Builds each layer as an image of the engine, tagged by its content hash (see image_tag)."""

    name = "docker"

    def __init__(
        self,
        engine: DockerEngine,
        labels: Mapping[str, str] | None = None,
        committer: Committer | None = None,
    ) -> None:
        """labels: put on the containers the builder runs (e.g. the server's, so leftovers can be found).
        committer: makes an image of an Image.run_function container (the docker runtime)."""
        self._engine = engine
        self._labels = dict(labels or {})
        self.committer = committer

    async def build(self, job: BuildJob, log: LogFn) -> ImageConfig:
        dockerfile = dockerfile_for(job)
        context = await asyncio.to_thread(build_context, job)
        tag = image_tag(job.content_hash)
        labels = {LABEL_CONTENT_HASH: job.content_hash}
        try:
            if job.build_function is not None:
                image_id = await self._from_function(job, dockerfile, context, log, tag, labels)
            elif job.secret_env and any(ins.keyword == "RUN" for ins in job.instructions):
                first = dockerfile.split("\n", 1)[0]
                layer = SecretLayer(self._engine, job, first, context, log, self._labels)
                image_id = await layer.build(tag, labels)
            else:
                image_id = await self._engine.build(
                    dockerfile,
                    context,
                    tag,
                    log,
                    build_args=job.build_args,
                    no_cache=job.force,
                    labels=labels,
                )
            info = await self._engine.image_config(image_id)
        except BuildError as exc:
            raise BuildFailed(describe_failure(exc)) from None
        except DockerError as exc:
            raise BuildFailed(f"The Docker engine could not build this image: {exc}") from None
        python_version = job.parent.python_version if job.parent is not None else ""
        if not python_version:
            python_version = await self._python_version(image_id, log)
        return ImageConfig(
            python_version=python_version,
            workdir=info.workdir or "/root",
            env=info.env,
            cmd=info.cmd or [],
            entrypoint=info.entrypoint or [],
            ref=image_id,
        )

    async def _from_function(
        self,
        job: BuildJob,
        dockerfile: str,
        context: dict[str, ContextFile],
        log: LogFn,
        tag: str,
        labels: dict[str, str],
    ) -> str:
        """Image.run_function: the function's container committed once it succeeded, then the layer's own
        instructions on it, with the empty mount points of the container's binds removed."""
        build = job.build_function
        assert build is not None
        if job.runner is None or self.committer is None or not build.function_id:
            raise BuildFailed("Image.run_function: the build function was not created")
        if job.parent is None:
            raise BuildFailed("Image.run_function needs a base image to run the function on")
        committer, made = self.committer, list[Committed]()

        async def commit(task_id: str) -> None:
            made.append(await committer.commit(task_id, f"Image.run_function layer {job.image_id}"))

        try:
            await job.runner.run(build.function_id, build.input, log, target=COMMIT_BUILD, commit=commit)
            if not made:
                raise BuildFailed("Image.run_function: its container was not committed")
            committed = made[0]
            user = (await self._engine.image_config(committed.image_id)).user
            lines = [f"FROM {committed.image_id}", *cleanup_lines(committed.placeholders, user)]
            lines += dockerfile.splitlines()[1:]
            return await self._engine.build(
                "\n".join(lines) + "\n",
                context,
                tag,
                log,
                build_args=job.build_args,
                no_cache=job.force,
                labels=labels,
            )
        except BaseException:
            for unused in made:
                with contextlib.suppress(DockerError):
                    await self._engine.remove_image(unused.image_id)
            raise

    async def _python_version(self, image_id: str, log: LogFn) -> str:
        """The version of the image's `python`, run once in a container; "" when it has none."""
        output: list[str] = []
        config = RunConfig(
            image=image_id,
            command=["python", "-c", _PYTHON_PROGRAM],
            name=f"onshore-probe-{uuid.uuid4().hex[:16]}",
            labels={**self._labels, LABEL_ROLE: "python-probe"},
            network="none",
            entrypoint=[],
        )
        try:
            cid = await self._engine.run(config)
        except DockerError as exc:
            if "executable file not found" not in str(exc):
                raise BuildFailed(f"Could not run the image to find its Python version: {exc}") from None
            self._no_python(log, "there is no `python` on its PATH")
            return ""
        try:
            follow = self._engine.logs(cid, lambda fd, text: output.append(text))
            await asyncio.wait_for(follow, _PROBE_SECONDS)
            status = await asyncio.wait_for(self._engine.wait(cid), _PROBE_SECONDS)
        except (DockerError, TimeoutError) as exc:
            raise BuildFailed(f"Could not run the image to find its Python version: {exc}") from None
        finally:
            with contextlib.suppress(DockerError):
                await self._engine.remove(cid)
        text = "".join(output).strip()
        if status.code == 0 and re.fullmatch(r"\d+\.\d+\.\d+", text):
            log(f"the image's Python is {text}\n")
            return text
        self._no_python(log, f"`python -c ...` said: {text[-300:] or f'exit code {status.code}'}")
        return ""

    @staticmethod
    def _no_python(log: LogFn, why: str) -> None:
        log(
            f"note: the image has no Python to run ({why}); its containers cannot start until a later "
            "layer installs Python\n"
        )
