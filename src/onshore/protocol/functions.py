"""Function definitions: what the client sent, turned into a schedulable spec and handle metadata."""

from __future__ import annotations

from typing import Any

from modal_proto import api_pb2

from onshore.models import (
    DEFAULT_CPU,
    DEFAULT_MEMORY_MB,
    FunctionRecord,
    FunctionSpec,
    GpuChoice,
    GpuRequest,
    RetryPolicy,
)
from onshore.protocol.asgi import web_endpoints, web_refusals
from onshore.protocol.schedules import schedule_from_definition
from onshore.runtimes.base import Capabilities

DEFAULT_SCALEDOWN_WINDOW = 60.0


def gpu_choice(config: Any) -> GpuChoice | None:
    """A GPUConfig as a choice (None: no GPU)."""
    gpu_type = str(config.gpu_type)
    if not gpu_type and config.type:  # the enum of older clients: GPU_TYPE_A100_80GB...
        gpu_type = api_pb2.GPUType.Name(config.type).removeprefix("GPU_TYPE_").replace("_", "-")
    if not gpu_type and not config.count:
        return None
    return GpuChoice(gpu_type.upper() or "ANY", max(1, int(config.count)))


def gpu_request(configs: list[Any]) -> GpuRequest | None:
    """The GPUs of a definition: one config, or a fallback list (ranked functions) in order."""
    choices = [c for c in (gpu_choice(config) for config in configs) if c is not None]
    return GpuRequest(choices) if choices else None


def spec_from_definition(fn: Any, fallbacks: list[Any] | None = None) -> FunctionSpec:
    """fallbacks: the GPUConfigs of a gpu=[...] list, in order (the definition's own is the first)."""
    auto = fn.autoscaler_settings
    retry = fn.retry_policy
    # The client always fills the whole policy when it sets retries, so 0 there is an explicit zero.
    policy = RetryPolicy(
        max_retries=int(retry.retries),
        initial_delay_ms=int(retry.initial_delay_ms),
        backoff_coefficient=float(retry.backoff_coefficient) if retry.backoff_coefficient >= 1.0 else 2.0,
        max_delay_ms=int(retry.max_delay_ms) if retry.max_delay_ms else 60_000,
    )
    concurrency = max(int(fn.max_concurrent_inputs), int(fn.target_concurrent_inputs), 1)
    max_inputs = 1 if fn.single_use_containers else int(fn.max_inputs)
    return FunctionSpec(
        tag=fn.function_name,
        module_name=fn.module_name,
        timeout_secs=int(fn.timeout_secs) or 300,
        retry=policy,
        min_containers=int(auto.min_containers or fn.warm_pool_size),
        max_containers=int(auto.max_containers or fn.concurrency_limit),
        buffer_containers=int(auto.buffer_containers or fn._experimental_buffer_containers),
        scaledown_window=float(
            auto.scaledown_window or fn.task_idle_timeout_secs or DEFAULT_SCALEDOWN_WINDOW
        ),
        max_concurrent_inputs=concurrency,
        max_inputs=max_inputs,
        secret_ids=list(fn.secret_ids),
        mount_ids=list(fn.mount_ids),
        image_id=fn.image_id,
        is_class=bool(fn.is_class),
        is_generator=fn.function_type == api_pb2.Function.FUNCTION_TYPE_GENERATOR,
        object_dependencies=[d.object_id for d in fn.object_dependencies],
        cpu=fn.resources.milli_cpu / 1000.0 if fn.resources.milli_cpu else DEFAULT_CPU,
        memory_mb=int(fn.resources.memory_mb) or DEFAULT_MEMORY_MB,
        gpu=gpu_request(fallbacks or [fn.resources.gpu_config]),
        startup_timeout_secs=int(fn.startup_timeout_secs),
        batch_max_size=int(fn.batch_max_size),
        batch_wait_ms=int(fn.batch_linger_ms),
        target_concurrent_inputs=int(fn.target_concurrent_inputs),
        schedule=schedule_from_definition(fn),
    )


_RESERVED_MOUNT_DIRS = ("/proc", "/sys", "/dev", "/onshore", "/pkg", "/__modal")


def _volume_path_refusal(path: str) -> str:
    """Why a volume cannot be mounted at path ("" when it can)."""
    normal = "/" + "/".join(p for p in path.split("/") if p)
    if not path.startswith("/") or ".." in path.split("/"):
        return f"volume mount paths must be absolute paths without '..' (got {path!r})"
    if normal in ("/", "/root") or any(
        normal == d or normal.startswith(d + "/") for d in _RESERVED_MOUNT_DIRS
    ):
        return f"a volume cannot be mounted at {normal}: the container needs that directory itself"
    return ""


def refusals(fn: Any, can: Capabilities) -> list[str]:
    """Features in a definition that Onshore (or its backend, `can`) does not honour, each named with what is
    missing."""
    out: list[str] = []
    if gpu_choice(fn.resources.gpu_config) is not None and not can.gpus:
        out.append("GPUs (gpu=...): this server's runtime does not place containers on GPUs")
    if fn.volume_mounts and not can.volumes:
        out.append(
            "volumes (volumes={...}) need the server to run as root in Linux namespaces (each container's "
            "volume is an overlay the server mounts); this server does not"
        )
    out += [
        _volume_path_refusal(m.mount_path) for m in fn.volume_mounts if _volume_path_refusal(m.mount_path)
    ]
    if fn.shared_volume_mounts:
        out.append("network file systems (modal.NetworkFileSystem) are not supported; use a modal.Volume")
    if fn.cloud_bucket_mounts or fn.s3_mounts:
        out.append(
            "cloud bucket mounts (modal.CloudBucketMount) are not supported: no bucket service is reachable"
        )
    out += precreate_refusals(fn)  # web endpoint settings, on the function or on a class's methods
    if fn.scheduler_placement.regions:
        out.append("region=/cloud placement: this server is one region of its own")
    if fn.is_server:
        out.append("@modal.server apps are not supported yet")
    if fn._experimental_group_size > 0 or fn.i6pn_enabled:
        out.append("clustered functions (i6pn) are not supported")
    if (fn.resources.memory_mb_max or fn.resources.milli_cpu_max) and not can.memory_limits:
        why = can.limits_reason
        out.append(f"hard memory/CPU limits ((request, limit) tuples) cannot be enforced: {why}")
    if fn.block_network:
        out.append("block_network=True is not enforced yet")
    if fn.proxy_id:
        out.append("proxies are not supported")
    if fn.pty_info.pty_type:
        out.append("interactive shells (modal shell) are not supported yet")
    return out


def precreate_refusals(req: Any) -> list[str]:
    """What a FunctionPrecreate request (or a definition: both carry these fields) shows Onshore cannot
    honour: refused before any image build.

    The client precreates every function before it builds images; the rest of a definition (GPUs, volumes)
    comes with FunctionCreate, once the function's image is built.
    """
    return web_refusals(req)


def handle_metadata(record: FunctionRecord, base: FunctionRecord) -> Any:
    """FunctionHandleMetadata for a function (or a function bound to class parameters)."""
    fn: Any = api_pb2.Function.FromString(base.definition) if base.definition else None
    source: Any = fn
    if source is None and base.precreate:
        source = api_pb2.FunctionPrecreateRequest.FromString(base.precreate)
    meta = api_pb2.FunctionHandleMetadata(
        function_name=base.spec.tag if not source else source.function_name,
        definition_id=base.definition_id,
        app_id=record.app_id,
    )
    if source is not None:
        meta.function_type = source.function_type
        meta.function_schema.CopyFrom(source.function_schema)
        meta.supported_input_formats.extend(source.supported_input_formats)
        meta.supported_output_formats.extend(source.supported_output_formats)
        for name, method in source.method_definitions.items():
            sub = meta.method_handle_metadata[name]
            sub.function_name = method.function_name
            sub.function_type = method.function_type
            sub.web_url = method.web_url
            sub.is_method = True
            sub.use_method_name = name
            sub.function_schema.CopyFrom(method.function_schema)
            sub.supported_input_formats.extend(method.supported_input_formats)
            sub.supported_output_formats.extend(method.supported_output_formats)
    if fn is not None:
        meta.web_url = fn.web_url
        meta.class_parameter_info.CopyFrom(fn.class_parameter_info)
        for sub in meta.method_handle_metadata.values():
            sub.class_parameter_info.CopyFrom(fn.class_parameter_info)
    if record.parent_function_id:
        meta.base_function_id = base.function_id
    return meta


def function_data(definition: bytes) -> Any:
    """FunctionData with the single ranked function the client expects in FunctionCreate's response."""
    fn = api_pb2.Function.FromString(definition)
    data = api_pb2.FunctionData(
        module_name=fn.module_name,
        function_name=fn.function_name,
        function_type=fn.function_type,
        timeout_secs=fn.timeout_secs,
        is_class=fn.is_class,
        method_definitions_set=fn.method_definitions_set,
        web_url=fn.web_url,
    )
    data.web_url_info.CopyFrom(fn.web_url_info)
    data.webhook_config.CopyFrom(fn.webhook_config)
    data.class_parameter_info.CopyFrom(fn.class_parameter_info)
    data.function_schema.CopyFrom(fn.function_schema)
    for name, method in fn.method_definitions.items():
        data.method_definitions[name].CopyFrom(method)
    data.ranked_functions.add(rank=0, function=fn)
    return data


def function_summary(definition: bytes) -> Any:
    """What `modal app info` shows of a function (AppGetInfoResponse.FunctionInfoSummary): its GPU request,
    its schedule and whether it serves web endpoints, and whether those ask for proxy auth."""
    fn = api_pb2.Function.FromString(definition)
    summary = api_pb2.AppGetInfoResponse.FunctionInfoSummary()
    gpu = fn.resources.gpu_config
    if gpu.gpu_type or gpu.count:
        summary.gpu_config.add().CopyFrom(gpu)
    if fn.HasField("schedule"):
        summary.schedule.CopyFrom(fn.schedule)
    endpoints = web_endpoints(fn)
    if endpoints:
        summary.web_function = True
        summary.requires_proxy_auth = all(e.requires_proxy_auth for e in endpoints)
    return summary
