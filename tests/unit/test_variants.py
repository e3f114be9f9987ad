"""Function variants (with_options) and update_autoscaler over the in-memory store: their specs follow the
parent's definition, they keep no warm containers of their own, a redeploy resets overrides, a restart binds
the same ids."""

from __future__ import annotations

from modal_proto import api_pb2

from onshore.models import AppState, AutoscalerOverride, GpuChoice, GpuRequest
from onshore.protocol.functions import spec_from_definition
from onshore.protocol.options import apply_options, variant_spec
from onshore.services.apps import AppService
from onshore.services.clock import FakeClock
from onshore.services.functions import FunctionService
from onshore.store.memory import memory_store


def _definition(gpu: str = "", min_containers: int = 0, timeout: int = 60) -> bytes:
    fn = api_pb2.Function(function_name="f", timeout_secs=timeout, warm_pool_size=min_containers)
    if gpu:
        fn.resources.gpu_config.gpu_type = gpu
        fn.resources.gpu_config.count = 1
    return bytes(fn.SerializeToString())


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = memory_store()
        self.apps = AppService(self.store, self.clock)
        self.functions = FunctionService(self.store, self.apps, self.clock, variant_spec)
        self.app = self.apps.create("variants", AppState.DETACHED, "main")  # live, as a deployed one
        self.parent = ""
        self.parent = self.deploy(_definition(gpu="T4", min_containers=1))

    def deploy(self, definition: bytes) -> str:
        """Deploy (or redeploy) the parent function; its id."""
        spec = spec_from_definition(api_pb2.Function.FromString(definition))
        return self.functions.create(self.app.app_id, self.parent, definition, spec, []).function_id

    def bind(self, options: api_pb2.FunctionOptions) -> str:
        raw = bytes(options.SerializeToString(deterministic=True))
        parent = self.functions.get(self.parent)
        bound = self.functions.bind_params(parent.function_id, b"", raw, variant_spec(parent, raw))
        return bound.function_id


def test_a_variants_spec_follows_its_parents_redeploy_and_keeps_no_warm_containers() -> None:
    h = Harness()
    options = api_pb2.FunctionOptions(timeout_secs=5)
    variant = h.bind(options)
    spec = h.functions.spec(variant)
    assert spec is not None and spec.timeout_secs == 5
    assert spec.gpu == GpuRequest([GpuChoice("T4")])  # the parent's GPU, which the options leave alone
    assert spec.min_containers == 0  # the parent keeps one warm; each of its variants does not
    assert variant not in h.functions.warm_functions()
    h.deploy(_definition(gpu="H100", min_containers=1, timeout=60))
    spec = h.functions.spec(variant)
    assert spec is not None and spec.gpu == GpuRequest([GpuChoice("H100")]) and spec.timeout_secs == 5


def test_the_same_options_bind_the_same_variant_also_after_a_restart() -> None:
    h = Harness()
    options = api_pb2.FunctionOptions(timeout_secs=5)
    variant = h.bind(options)
    assert h.bind(options) == variant
    assert h.bind(api_pb2.FunctionOptions(timeout_secs=6)) != variant
    restarted = FunctionService(h.store, h.apps, h.clock, variant_spec)
    restarted.load_live()
    h.functions = restarted
    assert h.bind(options) == variant


def test_update_autoscaler_overrides_until_the_next_deployment_for_variants_too() -> None:
    h = Harness()
    parent = h.parent
    variant = h.bind(api_pb2.FunctionOptions(timeout_secs=5))
    h.functions.update_autoscaler(parent, AutoscalerOverride(max_containers=3))
    spec = h.functions.update_autoscaler(variant, AutoscalerOverride(min_containers=2, scaledown_window=9))
    assert (spec.min_containers, spec.scaledown_window) == (2, 9)
    spec = h.functions.update_autoscaler(variant, AutoscalerOverride(buffer_containers=1))
    assert (spec.min_containers, spec.buffer_containers) == (2, 1)  # unset ones keep their override
    assert variant in h.functions.warm_functions()
    parent_spec = h.functions.spec(parent)
    assert parent_spec is not None and parent_spec.max_containers == 3
    h.deploy(_definition(gpu="T4", min_containers=1))
    parent_spec, variant_spec_now = h.functions.spec(parent), h.functions.spec(variant)
    assert parent_spec is not None and parent_spec.max_containers == 0
    assert variant_spec_now is not None and variant_spec_now.min_containers == 0
    assert variant not in h.functions.warm_functions()


def test_apply_options_replaces_what_the_options_set_and_keeps_the_rest() -> None:
    base = api_pb2.Function(
        function_name="f", secret_ids=["st-a"], timeout_secs=60, target_concurrent_inputs=4
    )
    base.resources.milli_cpu = 1000
    base.resources.memory_mb = 512
    options = api_pb2.FunctionOptions(
        secret_ids=["st-b"], replace_secret_ids=True, max_concurrent_inputs=10, concurrency_limit=2
    )
    options.resources.memory_mb = 1024
    out = apply_options(base, options)
    assert list(out.secret_ids) == ["st-b"]
    assert out.resources.milli_cpu == 1000 and out.resources.memory_mb == 1024
    assert out.max_concurrent_inputs == 10 and out.target_concurrent_inputs == 4  # as the client reports it
    assert out.autoscaler_settings.max_containers == 2 and out.timeout_secs == 60
