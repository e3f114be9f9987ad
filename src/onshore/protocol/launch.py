"""Launch plans: the ContainerArguments, code directory and environment for one container."""

from __future__ import annotations

from collections.abc import Callable

from modal_proto import api_pb2

from onshore.models import ImageConfig, VolumeMountRef
from onshore.protocol.functions import handle_metadata
from onshore.protocol.options import apply_options
from onshore.services.apps import AppService
from onshore.services.containers import LaunchPlan
from onshore.services.functions import FunctionService
from onshore.services.mounts import MountService
from onshore.services.secrets import SecretService


class Launcher:
    def __init__(
        self,
        apps: AppService,
        functions: FunctionService,
        mounts: MountService,
        secrets: SecretService,
        image_config: Callable[[str], ImageConfig | None],
    ) -> None:
        self._image_config = image_config
        self._apps = apps
        self._functions = functions
        self._mounts = mounts
        self._secrets = secrets

    async def plan(self, function_id: str, task_id: str) -> LaunchPlan:
        record = self._functions.get(function_id)
        base = self._functions.definition_of(record)
        app = self._apps.get(record.app_id)
        definition = api_pb2.Function.FromString(base.definition)
        if record.options:  # a with_options/with_concurrency/with_batching variant
            definition = apply_options(definition, api_pb2.FunctionOptions.FromString(record.options))
        args = api_pb2.ContainerArguments(
            task_id=task_id,
            function_id=function_id,
            app_id=app.app_id,
            environment_name=app.environment,
            serialized_params=record.serialized_params,
        )
        args.function_def.CopyFrom(definition)
        layout = args.app_layout
        seen: set[str] = set()
        for fn in self._functions.list_for_app(app.app_id):
            if fn.parent_function_id:
                continue
            obj = layout.objects.add(object_id=fn.function_id)
            obj.function_handle_metadata.CopyFrom(handle_metadata(fn, fn))
            seen.add(fn.function_id)
        for tag, function_id_ in app.function_ids.items():
            layout.function_ids[tag] = function_id_
        for tag, class_id in app.class_ids.items():
            layout.class_ids[tag] = class_id
            if class_id not in seen:
                layout.objects.add(object_id=class_id).class_handle_metadata.SetInParent()
                seen.add(class_id)
        for mount_id in definition.mount_ids:
            if mount_id not in seen:
                mount = self._mounts.get(mount_id)
                obj = layout.objects.add(object_id=mount_id)
                obj.mount_handle_metadata.content_checksum_sha256_hex = self._mounts.checksum(mount)
                seen.add(mount_id)
        for dep in definition.object_dependencies:
            if dep.object_id not in seen:
                layout.objects.add(object_id=dep.object_id)
                seen.add(dep.object_id)
        code_dir = self._mounts.materialize(list(definition.mount_ids))
        return LaunchPlan(
            container_args=bytes(args.SerializeToString()),
            code_dir=str(code_dir),
            client_version=self._mounts.client_version(list(definition.mount_ids)),
            env=self._secrets.env_for(list(definition.secret_ids)),
            image=self._image_config(definition.image_id),
            memory_limit_mb=int(definition.resources.memory_mb_max),
            cpu_limit=definition.resources.milli_cpu_max / 1000.0,
            volumes=volume_refs(definition),
        )


def volume_refs(definition: api_pb2.Function) -> list[VolumeMountRef]:
    return [
        VolumeMountRef(m.volume_id, m.mount_path, m.read_only, m.sub_path) for m in definition.volume_mounts
    ]
