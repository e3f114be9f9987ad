"""Function variants: a definition with the FunctionOptions of with_options/with_concurrency/with_batching."""

from __future__ import annotations

from typing import Any

from modal_proto import api_pb2

from onshore.models import FunctionRecord, FunctionSpec
from onshore.protocol.functions import spec_from_definition

# What each FunctionOptions field is called where the user wrote it: (method, argument).
_USER_NAMES = {
    "resources": ("with_options", "cpu=/memory=/gpu="),
    "retry_policy": ("with_options", "retries="),
    "concurrency_limit": ("with_options", "max_containers="),
    "buffer_containers": ("with_options", "buffer_containers="),
    "task_idle_timeout_secs": ("with_options", "scaledown_window="),
    "timeout_secs": ("with_options", "timeout="),
    "secret_ids": ("with_options", "secrets=/env="),
    "volume_mounts": ("with_options", "volumes="),
    "scheduler_placement": ("with_options", "region="),
    "cloud_provider_str": ("with_options", "cloud="),
    "routing_region": ("with_options", "routing_region="),
    "cloud_bucket_mounts": ("with_options", "volumes= with a CloudBucketMount"),
    "max_concurrent_inputs": ("with_concurrency", "max_inputs="),
    "target_concurrent_inputs": ("with_concurrency", "target_inputs="),
    "batch_max_size": ("with_batching", "max_batch_size="),
    "batch_linger_ms": ("with_batching", "wait_ms="),
}


def user_name(field: str, is_class: bool) -> str:
    """ "Cls.with_options(region=...)" for a FunctionOptions field, as the user called it."""
    method, argument = _USER_NAMES.get(field, ("with_options", f"{field}="))
    return f"{'Cls' if is_class else 'Function'}.{method}({argument}...)"


def option_refusals(options: Any, is_class: bool) -> list[str]:
    """Options Onshore does not honour, each named as the user wrote it."""
    out = []
    if options.HasField("scheduler_placement") and options.scheduler_placement.ListFields():
        out.append(f"{user_name('scheduler_placement', is_class)}: this server is one region of its own")
    if options.HasField("cloud_provider_str") and options.cloud_provider_str:
        out.append(f"{user_name('cloud_provider_str', is_class)}: this server is its own cloud")
    if options.HasField("routing_region") and options.routing_region:
        out.append(f"{user_name('routing_region', is_class)}: this server is one region of its own")
    if options.cloud_bucket_mounts:
        out.append(
            f"{user_name('cloud_bucket_mounts', is_class)}: cloud bucket mounts are not supported "
            "(no bucket service is reachable)"
        )
    if options.HasField("pinned_app_version"):
        out.append("pinning a variant to an app version (pinned_app_version) is not supported")
    return out


def options_given(options: Any) -> list[str]:
    """The user-facing names of the options set (for errors about the variant as a whole)."""
    return [name for field, _ in options.ListFields() if (name := _USER_NAMES.get(field.name, ("", ""))[1])]


def apply_options(definition: Any, options: Any) -> Any:
    """The definition a variant's containers run: `definition` with what `options` sets replacing it."""
    out = api_pb2.Function()
    out.CopyFrom(definition)
    if options.replace_secret_ids:
        del out.secret_ids[:]
        out.secret_ids.extend(options.secret_ids)
    if options.replace_volume_mounts:
        del out.volume_mounts[:]
        out.volume_mounts.extend(options.volume_mounts)
    if options.HasField("resources"):
        given = options.resources
        resources = out.resources
        if given.milli_cpu:
            resources.milli_cpu = given.milli_cpu
            resources.milli_cpu_max = given.milli_cpu_max
        if given.memory_mb:
            resources.memory_mb = given.memory_mb
            resources.memory_mb_max = given.memory_mb_max
        if given.gpu_config.count or given.gpu_config.gpu_type:
            resources.gpu_config.CopyFrom(given.gpu_config)
        if given.ephemeral_disk_mb:
            resources.ephemeral_disk_mb = given.ephemeral_disk_mb
    if options.HasField("retry_policy"):
        out.retry_policy.CopyFrom(options.retry_policy)
    auto = out.autoscaler_settings
    if options.HasField("concurrency_limit"):
        auto.max_containers = out.concurrency_limit = options.concurrency_limit
    if options.HasField("buffer_containers"):
        auto.buffer_containers = options.buffer_containers
    if options.HasField("task_idle_timeout_secs"):
        auto.scaledown_window = out.task_idle_timeout_secs = options.task_idle_timeout_secs
    if options.HasField("warm_pool_size"):
        auto.min_containers = out.warm_pool_size = options.warm_pool_size
    if options.HasField("timeout_secs"):
        out.timeout_secs = options.timeout_secs
    if options.HasField("max_concurrent_inputs"):
        out.max_concurrent_inputs = options.max_concurrent_inputs
    if options.HasField("target_concurrent_inputs"):
        out.target_concurrent_inputs = options.target_concurrent_inputs
    if options.HasField("batch_max_size"):
        out.batch_max_size = options.batch_max_size
    if options.HasField("batch_linger_ms"):
        out.batch_linger_ms = options.batch_linger_ms
    return out


def variant_spec(parent: FunctionRecord, options_raw: bytes) -> FunctionSpec:
    """A variant's settings: its parent's current definition with the options applied. A gpu=[...] list of
    the parent stays unless the options name a GPU; min_containers is the variant's own (none unless set):
    warm containers for every option set ever bound would pile up."""
    options = api_pb2.FunctionOptions.FromString(options_raw)
    definition = apply_options(api_pb2.Function.FromString(parent.definition), options)
    spec = spec_from_definition(definition)
    if not (options.resources.gpu_config.count or options.resources.gpu_config.gpu_type):
        spec.gpu = parent.spec.gpu
    if not options.HasField("warm_pool_size"):
        spec.min_containers = 0
    return spec
