"""Functions and classes: definitions, parameter binding, lookups by name."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from onshore import ids
from onshore.errors import InvalidArgument, NotFound, PermissionDenied, Unimplemented
from onshore.models import (
    LIVE_APP_STATES,
    AutoscalerOverride,
    ClassRecord,
    FunctionRecord,
    FunctionSpec,
    FunctionTarget,
)
from onshore.services.apps import AppService
from onshore.services.clock import Clock
from onshore.services.schedule_times import validate as validate_schedule
from onshore.store.base import FunctionStore

log = logging.getLogger("onshore.functions")


class FunctionService:
    def __init__(
        self,
        store: FunctionStore,
        apps: AppService,
        clock: Clock,
        variant_spec: Callable[[FunctionRecord, bytes], FunctionSpec] | None = None,
    ) -> None:
        """variant_spec: a with_options variant's spec from its parent (its current definition) and its
        serialized options; None keeps the spec the variant was bound with."""
        self._variant_spec = variant_spec
        self._store = store
        self._apps = apps
        self._clock = clock
        self._cache: dict[str, FunctionRecord] = {}
        self._bound: dict[tuple[str, str], str] = {}
        self.generation: dict[str, int] = {}
        self._specs: dict[str, FunctionSpec] = {}  # spec() of each function: cleared on every change
        self._image_builders: set[str] = set()

    # ---------------------------------------------------------------- lookups
    def find(self, function_id: str) -> FunctionRecord | None:
        fn = self._cache.get(function_id)
        if fn is None:
            fn = self._store.get_function(function_id)
            if fn is not None:
                self._cache[function_id] = fn
        return fn

    def get(self, function_id: str) -> FunctionRecord:
        fn = self.find(function_id)
        if fn is None:
            raise NotFound(f"Function {function_id} not found")
        return fn

    def definition_of(self, fn: FunctionRecord) -> FunctionRecord:
        """The record that holds the definition: a bound function's parent."""
        if fn.parent_function_id:
            return self.get(fn.parent_function_id)
        return fn

    def spec(self, function_id: str) -> FunctionSpec | None:
        """The settings a function's calls and containers follow: its definition's (a variant's own, made
        with options), with what update_autoscaler() set on top."""
        cached = self._specs.get(function_id)
        if cached is not None:
            return cached
        fn = self.find(function_id)
        if fn is None:
            return None
        base = self.definition_of(fn)
        spec = base.spec
        if fn.options:
            spec = fn.spec
            if self._variant_spec is not None and base.definition:
                try:
                    spec = self._variant_spec(base, fn.options)  # the parent's definition of now
                except Exception:
                    log.exception("the options of variant %s no longer apply; keeping its old spec", fn)
        if base is not fn and not fn.options and base.autoscaler is not None:
            spec = base.autoscaler.apply(spec)
        if fn.autoscaler is not None:
            spec = fn.autoscaler.apply(spec)
        self._specs[function_id] = spec
        return spec

    def update_autoscaler(self, function_id: str, change: AutoscalerOverride) -> FunctionSpec:
        """Function.update_autoscaler(): the given settings replace the current ones until a redeploy."""
        fn = self.get(function_id)
        current = fn.autoscaler or AutoscalerOverride()
        merged = AutoscalerOverride(
            **{k: v if v is not None else getattr(current, k) for k, v in vars(change).items()}
        )
        fn.autoscaler = merged
        self._save(fn)
        spec = self.spec(function_id)
        assert spec is not None
        return spec

    def mark_image_builder(self, function_id: str) -> None:
        """An Image.run_function function: its image build starts its one container, not the autoscaler."""
        self._image_builders.add(function_id)

    def target(self, function_id: str) -> FunctionTarget | None:
        """What the autoscaler should run for this function, or None (its app is not live, or it is an
        Image.run_function function, whose container its image build starts)."""
        if function_id in self._image_builders:
            return None
        return self._live_target(function_id)

    def _live_target(self, function_id: str) -> FunctionTarget | None:
        fn = self.find(function_id)
        if fn is None or not self._apps.is_live(fn.app_id):
            return None
        base = self.definition_of(fn)
        if not base.definition:
            return None
        spec = self.spec(function_id)
        assert spec is not None
        return FunctionTarget(function_id, fn.app_id, spec)

    def is_runnable(self, function_id: str) -> bool:
        return self._live_target(function_id) is not None

    def list_for_app(self, app_id: str) -> list[FunctionRecord]:
        return self._store.list_functions(app_id)

    def warm_functions(self) -> list[str]:
        """Functions of live apps that keep containers warm (min_containers > 0)."""
        out = []
        for fn in self._cache.values():
            if fn.parent_function_id and not (fn.options or fn.autoscaler):
                continue  # a class's parameter set: containers only for calls
            spec = self.spec(fn.function_id)
            if spec is not None and spec.min_containers > 0 and self._apps.is_live(fn.app_id):
                out.append(fn.function_id)
        return out

    def load_live(self) -> list[FunctionRecord]:
        """Warm the cache with the functions of live apps (after a restart); those functions."""
        loaded = []
        for app in self._apps.all_apps():
            if app.state in LIVE_APP_STATES:
                for fn in self._store.list_functions(app.app_id):
                    self._cache[fn.function_id] = fn
                    loaded.append(fn)
                    if fn.parent_function_id:  # the same parameters and options bind it again
                        key = _bind_key(fn.parent_function_id, fn.serialized_params, fn.options)
                        self._bound.setdefault(key, fn.function_id)
        return loaded

    def by_name(self, app_name: str, tag: str, environment: str) -> FunctionRecord:
        app = self._apps.deployed(app_name, environment or "main")
        if app is None:
            raise NotFound(f"Lookup failed for Function '{tag}' from the '{app_name}' app: app not found.")
        function_id = app.function_ids.get(tag)
        if function_id is None:
            raise NotFound(
                f"Lookup failed for Function '{tag}' from the '{app_name}' app: "
                f"no Function named '{tag}' in that app."
            )
        return self.get(function_id)

    def class_by_name(self, app_name: str, tag: str, environment: str) -> ClassRecord:
        app = self._apps.deployed(app_name, environment or "main")
        if app is None:
            raise NotFound(f"Lookup failed for Cls '{tag}' from the '{app_name}' app: app not found.")
        class_id = app.class_ids.get(tag)
        cls = self._store.get_class(class_id) if class_id else None
        if cls is None:
            raise NotFound(f"Lookup failed for Cls '{tag}' from the '{app_name}' app: no Cls named '{tag}'.")
        return cls

    # ---------------------------------------------------------------- definitions
    def precreate(
        self, app_id: str, tag: str, existing_function_id: str, precreate: bytes, refused: list[str]
    ) -> FunctionRecord:
        self._apps.get(app_id)
        if not tag:
            raise InvalidArgument("FunctionPrecreate needs a function name")
        _refuse(tag, refused)  # before the app's images are built: the client builds them next
        if existing_function_id:
            fn = self.find(existing_function_id)
            if fn is None or fn.app_id != app_id:
                raise NotFound(f"Function {existing_function_id} does not belong to app {app_id}")
            fn.precreate = precreate
        else:
            fn = FunctionRecord(
                function_id=ids.new_id("function"),
                app_id=app_id,
                spec=FunctionSpec(tag=tag),
                precreate=precreate,
                created_at=self._clock.now(),
            )
        fn.definition_id = fn.definition_id or ids.new_id("definition")
        self._save(fn)
        return fn

    def create(
        self,
        app_id: str,
        function_id: str,
        definition: bytes,
        spec: FunctionSpec,
        refused: list[str],
    ) -> FunctionRecord:
        _refuse(spec.tag, refused)
        if spec.schedule is not None:
            try:
                validate_schedule(spec.schedule)
            except InvalidArgument as exc:
                raise InvalidArgument(f"Function '{spec.tag}' has a bad schedule: {exc}") from None
        self._apps.get(app_id)
        fn = self.find(function_id) if function_id else None
        redeployed = fn is not None
        if fn is None:
            fn = FunctionRecord(
                function_id=function_id or ids.new_id("function"),
                app_id=app_id,
                spec=spec,
                created_at=self._clock.now(),
                definition_id=ids.new_id("definition"),
            )
        elif fn.app_id != app_id:
            raise PermissionDenied(f"Function {function_id} belongs to another app")
        fn.spec = spec
        fn.definition = definition
        fn.autoscaler = None  # a deployment resets update_autoscaler(), its variants' too
        for child in self._store.list_functions(app_id) if redeployed else []:
            if child.parent_function_id == fn.function_id and child.autoscaler is not None:
                child.autoscaler = None
                self._save(child)
        self.generation[fn.function_id] = self.generation.get(fn.function_id, 0) + 1
        self._save(fn)
        return fn

    def bind_params(
        self,
        function_id: str,
        serialized_params: bytes,
        options: bytes = b"",
        variant_spec: FunctionSpec | None = None,
    ) -> FunctionRecord:
        """A function bound to class parameters and/or options (with_options...): one id per distinct
        (parameters, options), so each gets its own containers. variant_spec: the spec the options make."""
        parent = self.get(function_id)
        if parent.parent_function_id:
            raise InvalidArgument(f"Function {function_id} is already bound; bind its parent instead")
        if serialized_params and not parent.spec.is_class:
            raise InvalidArgument(f"Function {function_id} is not a class; only classes take parameters")
        key = _bind_key(function_id, serialized_params, options)
        existing = self._bound.get(key)
        if existing is not None:
            return self.get(existing)  # spec() derives a variant's spec from its parent's definition of now
        bound = FunctionRecord(
            function_id=ids.new_id("function"),
            app_id=parent.app_id,
            spec=variant_spec if options and variant_spec is not None else parent.spec,
            parent_function_id=function_id,
            serialized_params=serialized_params,
            definition_id=parent.definition_id,
            created_at=self._clock.now(),
            options=options,
        )
        self._save(bound)
        self._bound[key] = bound.function_id
        return bound

    def current_generation(self, function_id: str) -> int:
        fn = self.find(function_id)
        if fn is None:
            return 0
        return self.generation.get(self.definition_of(fn).function_id, 0)

    # ---------------------------------------------------------------- classes
    def create_class(self, app_id: str, existing_class_id: str, metadata: bytes) -> ClassRecord:
        self._apps.get(app_id)
        cls = self._store.get_class(existing_class_id) if existing_class_id else None
        if cls is None or cls.app_id != app_id:
            cls = ClassRecord(ids.new_id("class"), app_id)
        cls.metadata = metadata
        self._store.put_class(cls)
        return cls

    def name_classes(self, app_id: str, class_ids: dict[str, str]) -> None:
        for tag, class_id in class_ids.items():
            cls = self._store.get_class(class_id)
            if cls is not None and cls.app_id == app_id and cls.tag != tag:
                cls.tag = tag
                self._store.put_class(cls)

    def get_class(self, class_id: str) -> ClassRecord:
        cls = self._store.get_class(class_id)
        if cls is None:
            raise NotFound(f"Class {class_id} not found")
        return cls

    def _save(self, fn: FunctionRecord) -> None:
        self._store.put_function(fn)  # stored first: a failed write publishes nothing
        self._cache[fn.function_id] = fn
        self._specs.clear()


def _bind_key(parent_id: str, serialized_params: bytes, options: bytes) -> tuple[str, str]:
    """Which bound function a (parameters, options) pair of a parent is: the same one every time."""
    digest = hashlib.sha256(len(serialized_params).to_bytes(8, "big") + serialized_params + options)
    return parent_id, digest.hexdigest()


def _refuse(tag: str, refused: list[str]) -> None:
    if refused:
        raise Unimplemented(
            f"Function '{tag}' uses features Onshore does not support yet: " + "; ".join(refused)
        )
