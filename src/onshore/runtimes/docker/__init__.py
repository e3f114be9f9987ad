"""The docker backend: containers and image builds on a Docker engine, this machine's or another's."""

from __future__ import annotations

from onshore.config import DEFAULT_DOCKER_NETWORK
from onshore.runtimes.base import Backend, BackendConfig, Resources
from onshore.runtimes.docker.builder import DockerBuilder
from onshore.runtimes.docker.engine import DockerEngine, DockerError
from onshore.runtimes.docker.runtime import DockerRuntime, server_labels


def build(config: BackendConfig) -> Backend:
    engine = DockerEngine(config.docker_host or None)
    labels = server_labels(config.root)
    runtime = DockerRuntime(
        engine,
        config.root / "docker",
        config.max_containers,
        network=config.docker_network or DEFAULT_DOCKER_NETWORK,
        labels=labels,
        blobs=(config.http_url, config.blob_socket) if config.blob_socket else None,
    )
    # Image.run_function: the runtime commits the function's container as the layer.
    builder = DockerBuilder(engine, labels, committer=runtime)
    backend = Backend(runtime, builder, [])

    async def prepare() -> None:
        await runtime.prepare()  # EngineUnavailable when the engine does not answer
        try:
            cpus, memory_mb = await engine.resources()
        except DockerError:
            cpus, memory_mb = 0, 0
        # The engine's GPUs are this machine's (NVML, or --gpus): an engine elsewhere gets device requests
        # for GPUs it may not have.
        backend.nodes = [Resources(float(cpus), memory_mb, config.gpus, config.gpu_note)]

    backend.starts.append(prepare)
    backend.closes += [engine.close, runtime.shutdown]  # closed in reverse: containers, then the engine
    return backend
