"""What a function definition asks for that the server cannot honour is refused with the reason."""

from __future__ import annotations

from modal_proto import api_pb2

from onshore.protocol.functions import precreate_refusals, refusals
from onshore.runtimes.base import Capabilities


def test_hard_limits_refused_only_where_they_cannot_be_enforced() -> None:
    fn = api_pb2.Function(function_name="f")
    fn.resources.memory_mb = 64
    fn.resources.memory_mb_max = 256
    without = Capabilities(memory_limits=False, limits_reason="no cgroups here: not root")
    refused = refusals(fn, without)
    assert refused == [
        "hard memory/CPU limits ((request, limit) tuples) cannot be enforced: no cgroups here: not root"
    ]
    assert refusals(fn, Capabilities(memory_limits=True, limits_reason="")) == []
    plain = api_pb2.Function(function_name="g")
    plain.resources.memory_mb = 64  # a request alone is always accepted
    assert refusals(plain, without) == []


def test_gpus_and_volumes_refused_where_the_backend_has_none() -> None:
    fn = api_pb2.Function(function_name="f")
    fn.resources.gpu_config.count = 1
    fn.resources.gpu_config.gpu_type = "H100"
    fn.volume_mounts.add(mount_path="/data", volume_id="vo-1")
    assert refusals(fn, Capabilities()) == [
        "GPUs (gpu=...): this server's runtime does not place containers on GPUs",
        "volumes (volumes={...}) need the server to run as root in Linux namespaces (each container's "
        "volume is an overlay the server mounts); this server does not",
    ]
    assert refusals(fn, Capabilities(gpus=True, volumes=True)) == []


def test_volume_mount_paths_and_other_storage_are_checked() -> None:
    fn = api_pb2.Function(function_name="f")
    for path in ("relative", "/", "/root", "/proc/x", "/data/../etc"):
        fn.volume_mounts.add(mount_path=path, volume_id="vo-1")
    fn.shared_volume_mounts.add(mount_path="/nfs", shared_volume_id="sv-1")
    fn.cloud_bucket_mounts.add(mount_path="/bucket", bucket_name="b")
    assert refusals(fn, Capabilities(volumes=True)) == [
        "volume mount paths must be absolute paths without '..' (got 'relative')",
        "a volume cannot be mounted at /: the container needs that directory itself",
        "a volume cannot be mounted at /root: the container needs that directory itself",
        "a volume cannot be mounted at /proc/x: the container needs that directory itself",
        "volume mount paths must be absolute paths without '..' (got '/data/../etc')",
        "network file systems (modal.NetworkFileSystem) are not supported; use a modal.Volume",
        "cloud bucket mounts (modal.CloudBucketMount) are not supported: no bucket service is reachable",
    ]


def test_custom_domains_are_refused_at_precreate() -> None:
    """FunctionPrecreate comes before the client builds any image: what it shows is refused there. Web
    endpoints are served; a custom domain is not."""
    web = api_pb2.FunctionPrecreateRequest(function_name="f")
    web.webhook_config.type = api_pb2.WEBHOOK_TYPE_FUNCTION
    assert precreate_refusals(web) == []
    web.webhook_config.custom_domains.add(name="web.example.com")
    assert precreate_refusals(web) == [
        "a web endpoint asks for custom_domains=, which Onshore does not serve (use label=)"
    ]
    cls = api_pb2.FunctionPrecreateRequest(function_name="C.*")
    cls.method_definitions["plain"].function_name = "plain"
    cls.method_definitions["page"].webhook_config.type = api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert precreate_refusals(cls) == []
    cls.method_definitions["page"].webhook_config.custom_domains.add(name="pages.example.com")
    assert precreate_refusals(cls) == [
        "web endpoint method 'page' asks for custom_domains=, which Onshore does not serve (use label=)"
    ]
