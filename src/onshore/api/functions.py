"""gRPC handlers for function and class definitions, parameter binding and lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import Conflict, InvalidArgument, PermissionDenied, Unimplemented
from onshore.models import AutoscalerOverride, FunctionRecord, FunctionSpec
from onshore.protocol.asgi import set_web_urls, web_endpoints
from onshore.protocol.functions import (
    function_data,
    handle_metadata,
    precreate_refusals,
    refusals,
    spec_from_definition,
)
from onshore.protocol.options import apply_options, option_refusals, options_given, variant_spec
from onshore.runtimes.base import Capabilities
from onshore.scheduling.placement import Request, request_of
from onshore.services.apps import AppService
from onshore.services.functions import FunctionService
from onshore.services.web import WebService


class FunctionHandlers:
    def __init__(
        self,
        apps: AppService,
        functions: FunctionService,
        web: WebService,
        capabilities: Capabilities,
        never: Callable[[Request], str],
        on_autoscaler_change: Callable[[str], None] = lambda function_id: None,
    ) -> None:
        """never: why a container asking for these resources could never be placed ("" if it could)."""
        self._never = never
        self._on_autoscaler_change = on_autoscaler_change  # the autoscaler reconciles the function now
        self._apps = apps
        self._functions = functions
        self._web = web
        self._capabilities = capabilities  # what the backend can do: the rest of a definition is refused

    def _check_placeable(self, tag: str, spec: FunctionSpec, how: str = "") -> None:
        """InvalidArgument when no container of the function could ever be placed on this server."""
        why = self._never(request_of(spec))
        if why:
            raise InvalidArgument(f"Function '{tag}'{how} cannot run on this server: {why}")

    def _metadata(self, function_id: str) -> Any:
        fn = self._functions.get(function_id)
        meta = handle_metadata(fn, self._functions.definition_of(fn))
        meta.web_url = self._web.current_url(meta.web_url)
        for method in meta.method_handle_metadata.values():
            method.web_url = self._web.current_url(method.web_url)
        return meta

    async def FunctionPrecreate(
        self, req: api_pb2.FunctionPrecreateRequest, who: Principal
    ) -> api_pb2.FunctionPrecreateResponse:
        who.require_client("define functions")
        fn = self._functions.precreate(
            req.app_id,
            req.function_name,
            req.existing_function_id,
            bytes(req.SerializeToString()),
            precreate_refusals(req),
        )
        return api_pb2.FunctionPrecreateResponse(
            function_id=fn.function_id, handle_metadata=self._metadata(fn.function_id)
        )

    async def FunctionCreate(
        self, req: api_pb2.FunctionCreateRequest, who: Principal
    ) -> api_pb2.FunctionCreateResponse:
        # A definition names the secrets its containers receive: only a client's token may write one.
        who.require_client("define functions")
        fallbacks: list[Any] = []
        if req.HasField("function"):
            definition = req.function
        elif req.HasField("function_data") and req.function_data.ranked_functions:
            # gpu=[...]: one definition per GPU choice, the same but for its resources, in order.
            ranked = sorted(req.function_data.ranked_functions, key=lambda r: r.rank)
            definition = ranked[0].function
            fallbacks = [r.function.resources.gpu_config for r in ranked]
        else:
            raise InvalidArgument("FunctionCreate needs a function definition")
        existing = req.existing_function_id
        if not existing:
            app = self._apps.get(req.app_id)
            for fn in self._functions.list_for_app(req.app_id):
                if fn.spec.tag == definition.function_name and not fn.parent_function_id:
                    existing = fn.function_id
            existing = existing or app.function_ids.get(definition.function_name, "")
        refused = refusals(definition, self._capabilities)
        planned = []
        endpoints = web_endpoints(definition)
        if endpoints and not refused:
            # Each endpoint's URL is part of the definition the client gets back (and prints).
            planned = self._web.plan(self._apps.get(req.app_id), definition.function_name, endpoints)
            set_web_urls(definition, {e.method_name: self._web.url(label) for e, label in planned})
        raw = bytes(definition.SerializeToString())
        spec = spec_from_definition(definition, fallbacks)
        if not refused:
            self._check_placeable(definition.function_name, spec)
        fn = self._functions.create(req.app_id, existing, raw, spec, refused)
        self._web.register(fn.function_id, fn.app_id, planned)
        return api_pb2.FunctionCreateResponse(
            function_id=fn.function_id,
            function=definition,
            handle_metadata=self._metadata(fn.function_id),
            function_data=function_data(raw),
        )

    async def FunctionBindParams(
        self, req: api_pb2.FunctionBindParamsRequest, who: Principal
    ) -> api_pb2.FunctionBindParamsResponse:
        parent = self._functions.get(req.function_id)
        who.require_app(parent.app_id)
        options_raw, variant = b"", None
        if req.HasField("function_options") and req.function_options.ListFields():
            options_raw, variant = self._variant(parent, req.function_options)
        bound = self._functions.bind_params(
            req.function_id, bytes(req.serialized_params), options_raw, variant
        )
        return api_pb2.FunctionBindParamsResponse(
            bound_function_id=bound.function_id, handle_metadata=self._metadata(bound.function_id)
        )

    def _variant(self, parent: FunctionRecord, options: Any) -> tuple[bytes, FunctionSpec]:
        """The options of a with_options/with_concurrency/with_batching variant, checked, and its spec."""
        base = self._functions.definition_of(parent)
        is_class = base.spec.is_class
        refused = option_refusals(options, is_class)
        if not base.definition:
            raise Conflict(f"Function {parent.function_id} has no definition yet to apply options to")
        definition = apply_options(api_pb2.Function.FromString(base.definition), options)
        refused += refusals(definition, self._capabilities)
        method = f"{'Cls' if is_class else 'Function'}.with_options"
        if refused:
            raise Unimplemented(
                f"{method}(...) on '{base.spec.tag}' asks for what Onshore does not support: "
                + "; ".join(refused)
            )
        raw = bytes(options.SerializeToString(deterministic=True))
        spec = variant_spec(base, raw)
        given = ", ".join(options_given(options)) or "options"
        self._check_placeable(base.spec.tag, spec, f" with {method}({given}...)")
        return raw, spec

    async def FunctionUpdateSchedulingParams(
        self, req: api_pb2.FunctionUpdateSchedulingParamsRequest, who: Principal
    ) -> api_pb2.FunctionUpdateSchedulingParamsResponse:
        fn = self._functions.get(req.function_id)
        who.require_app(fn.app_id)
        settings = req.settings
        unsupported = [name for name in ("scaleup_window", "scaledown_rate_limit") if settings.HasField(name)]
        if unsupported:
            raise Unimplemented(f"update_autoscaler: {', '.join(unsupported)} is not supported")

        def given(name: str) -> int | None:
            return int(getattr(settings, name)) if settings.HasField(name) else None  # type: ignore[arg-type]

        window = given("scaledown_window")
        change = AutoscalerOverride(
            min_containers=given("min_containers"),
            max_containers=given("max_containers"),
            buffer_containers=given("buffer_containers"),
            scaledown_window=float(window) if window is not None else None,
        )
        if req.warm_pool_size_override:
            change.min_containers = req.warm_pool_size_override
        if settings.HasField("target_concurrency_float") or settings.HasField("target_concurrency"):
            target = settings.target_concurrency_float or float(settings.target_concurrency)
            change.target_concurrent_inputs = max(1, round(target))
        for name, value in vars(change).items():
            if value is not None and value < 0:
                raise InvalidArgument(f"update_autoscaler: {name} must not be negative (got {value})")
        spec = self._functions.update_autoscaler(fn.function_id, change)
        self._on_autoscaler_change(fn.function_id)
        current = api_pb2.AutoscalerSettings(
            min_containers=spec.min_containers,
            max_containers=spec.max_containers,
            buffer_containers=spec.buffer_containers,
            scaledown_window=int(spec.scaledown_window),
        )
        if spec.target_concurrent_inputs:
            current.target_concurrency = spec.target_concurrent_inputs
        return api_pb2.FunctionUpdateSchedulingParamsResponse(current_settings=current)

    async def FunctionGet(
        self, req: api_pb2.FunctionGetRequest, who: Principal
    ) -> api_pb2.FunctionGetResponse:
        fn = self._functions.by_name(req.app_name, req.object_tag, req.environment_name)
        if who.task is not None and fn.app_id != who.task.app_id:
            raise PermissionDenied("A container can only look up functions of its own app")
        base = self._functions.definition_of(fn)
        resp = api_pb2.FunctionGetResponse(
            function_id=fn.function_id, handle_metadata=self._metadata(fn.function_id)
        )
        if base.definition:
            resp.function.CopyFrom(function_data(base.definition))
        return resp

    async def FunctionGetById(
        self, req: api_pb2.FunctionGetByIdRequest, who: Principal
    ) -> api_pb2.FunctionGetByIdResponse:
        fn = self._functions.get(req.function_id)
        who.require_app(fn.app_id)
        base = self._functions.definition_of(fn)
        resp = api_pb2.FunctionGetByIdResponse(handle_metadata=self._metadata(fn.function_id))
        if base.definition:
            resp.function.CopyFrom(function_data(base.definition))
        return resp

    async def ClassCreate(
        self, req: api_pb2.ClassCreateRequest, who: Principal
    ) -> api_pb2.ClassCreateResponse:
        who.require_client("define classes")
        cls = self._functions.create_class(req.app_id, req.existing_class_id, bytes(req.SerializeToString()))
        return api_pb2.ClassCreateResponse(
            class_id=cls.class_id, handle_metadata=api_pb2.ClassHandleMetadata()
        )

    async def ClassGet(self, req: api_pb2.ClassGetRequest, who: Principal) -> api_pb2.ClassGetResponse:
        cls = self._functions.class_by_name(req.app_name, req.object_tag, req.environment_name)
        if who.task is not None and cls.app_id != who.task.app_id:
            raise PermissionDenied("A container can only look up classes of its own app")
        return api_pb2.ClassGetResponse(class_id=cls.class_id, handle_metadata=api_pb2.ClassHandleMetadata())
