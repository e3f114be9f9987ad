"""What a function definition asks for that the server cannot honour is refused with the reason."""

from __future__ import annotations

from modal_proto import api_pb2

from onshore.protocol.functions import precreate_refusals, refusals


def test_hard_limits_refused_only_where_they_cannot_be_enforced() -> None:
    fn = api_pb2.Function(function_name="f")
    fn.resources.memory_mb = 64
    fn.resources.memory_mb_max = 256
    refused = refusals(fn, "no cgroups here: not root")
    assert refused == [
        "hard memory/CPU limits ((request, limit) tuples) cannot be enforced: no cgroups here: not root"
    ]
    assert refusals(fn, "") == []
    plain = api_pb2.Function(function_name="g")
    plain.resources.memory_mb = 64  # a request alone is always accepted
    assert refusals(plain, "no cgroups here") == []


def test_web_endpoints_are_refused_at_precreate() -> None:
    """FunctionPrecreate comes before the client builds any image: what it shows is refused there."""
    plain = api_pb2.FunctionPrecreateRequest(function_name="f")
    assert precreate_refusals(plain) == []
    web = api_pb2.FunctionPrecreateRequest(function_name="f")
    web.webhook_config.type = api_pb2.WEBHOOK_TYPE_FUNCTION
    assert precreate_refusals(web) == ["web endpoints are not served yet"]
    cls = api_pb2.FunctionPrecreateRequest(function_name="C.*")
    cls.method_definitions["plain"].function_name = "plain"
    cls.method_definitions["page"].webhook_config.type = api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert precreate_refusals(cls) == ["web endpoint method 'page' is not served yet"]
