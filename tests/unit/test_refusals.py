"""What a function definition asks for that the server cannot honour is refused with the reason."""

from __future__ import annotations

from modal_proto import api_pb2

from onshore.protocol.functions import refusals


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
