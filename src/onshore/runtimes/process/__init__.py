"""The process backend: containers are processes on this machine, in Linux namespaces where it allows."""

from __future__ import annotations

import logging

from onshore.images.pythons import PythonFinder
from onshore.runtimes.base import Backend, BackendConfig, Resources, host_resources
from onshore.runtimes.process import sandbox
from onshore.runtimes.process.builder import ProcessBuilder
from onshore.runtimes.process.cgroups import CgroupError, Cgroups
from onshore.runtimes.process.runtime import ProcessRuntime
from onshore.runtimes.pyenv import ClientEnvironments

log = logging.getLogger("onshore.runtimes.process")


def spare_count(cpus: float) -> int:
    """How many spare processes the default image keeps: two per core, from 2 to 6. A spare takes about
    0.3 s of CPU to become ready (importing the client), so calls to one new function after another use
    them up faster than they come back; an idle one costs memory only (some 40 MB)."""
    return int(min(6, max(2, 2 * cpus)))


def build(config: BackendConfig) -> Backend:
    if config.isolation == "none":
        isolation = sandbox.Support("none", "isolation is off (onshore server --isolation none)")
    else:
        isolation = sandbox.probe()
        if not isolation.available:
            log.warning("containers and image builds run without isolation: %s", isolation.reason)
    cgroups: Cgroups | None = None
    limits_reason = ""
    try:
        cgroups = Cgroups()
    except CgroupError as exc:
        limits_reason = str(exc)
        log.info("hard memory/CPU limits are not available: %s", exc)
    host = host_resources()
    runtime = ProcessRuntime(
        config.root / "containers",
        ClientEnvironments(config.root / "envs"),
        config.max_containers,
        spares=spare_count(host.cpus),
        sandbox=isolation,
        hidden=config.hidden,
        cgroups=cgroups,
        container_url=config.container_url,
    )
    if limits_reason:
        runtime.capabilities.limits_reason = limits_reason
    builder = ProcessBuilder(config.root / "images", PythonFinder(), isolation, config.hidden)

    async def close_cgroups() -> None:
        if cgroups is not None:
            cgroups.close()

    # Closed in reverse: the containers end before their cgroups go.
    node = Resources(host.cpus, host.memory_mb, config.gpus, config.gpu_note)
    return Backend(runtime, builder, [node], closes=[close_cgroups, runtime.shutdown])
