"""gRPC handlers for apps: create, publish, lookup, info, stop, list and history (logs: api/logs.py)."""

from __future__ import annotations

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.api.validation import enum_name
from onshore.errors import InvalidArgument, NotFound, Unimplemented
from onshore.models import App, AppState
from onshore.protocol.functions import function_summary, handle_metadata
from onshore.services.apps import AppService
from onshore.services.containers import ContainerService
from onshore.services.functions import FunctionService
from onshore.services.logs import LogService
from onshore.services.schedules import ScheduleService

_STATE_TO_PROTO = {
    AppState.INITIALIZING: api_pb2.APP_STATE_INITIALIZING,
    AppState.EPHEMERAL: api_pb2.APP_STATE_EPHEMERAL,
    AppState.DETACHED: api_pb2.APP_STATE_DETACHED,
    AppState.DEPLOYED: api_pb2.APP_STATE_DEPLOYED,
    AppState.STOPPED: api_pb2.APP_STATE_STOPPED,
}
_PROTO_TO_STATE = {v: k for k, v in _STATE_TO_PROTO.items()}


def lifecycle(app: App) -> api_pb2.AppLifecycle:
    return api_pb2.AppLifecycle(
        app_state=_STATE_TO_PROTO[app.state],
        created_at=app.created_at,
        deployed_at=app.deployed_at or 0.0,
        stopped_at=app.stopped_at or 0.0,
        version=app.version,
    )


# The client gave up on an error: what it was still building for the app is abandoned.
_CLIENT_FAILURES = frozenset(
    {
        api_pb2.APP_DISCONNECT_REASON_LOCAL_EXCEPTION,
        api_pb2.APP_DISCONNECT_REASON_DEPLOYMENT_EXCEPTION,
        api_pb2.APP_DISCONNECT_REASON_REMOTE_EXCEPTION,
    }
)


class AppHandlers:
    def __init__(
        self,
        apps: AppService,
        functions: FunctionService,
        containers: ContainerService,
        logs: LogService,
        schedules: ScheduleService,
        public_url: str,
    ) -> None:
        self._apps = apps
        self._schedules = schedules
        self._functions = functions
        self._containers = containers
        self._logs = logs
        self._url = public_url.rstrip("/")

    def _page(self, app_id: str) -> str:
        return f"{self._url}/apps/{app_id}"

    async def AppCreate(self, req: api_pb2.AppCreateRequest, who: Principal) -> api_pb2.AppCreateResponse:
        who.require_client("create apps")
        state = _PROTO_TO_STATE.get(req.app_state, AppState.EPHEMERAL)
        app = self._apps.create(req.description, state, req.environment_name, who.client_version)
        return api_pb2.AppCreateResponse(
            app_id=app.app_id,
            app_page_url=self._page(app.app_id),
            app_logs_url=f"{self._page(app.app_id)}#logs",
        )

    async def AppGetOrCreate(
        self, req: api_pb2.AppGetOrCreateRequest, who: Principal
    ) -> api_pb2.AppGetOrCreateResponse:
        app = self._apps.deployed(req.app_name, req.environment_name or "main")
        if app is None:
            if req.object_creation_type not in (
                api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            ):
                raise NotFound(f"App '{req.app_name}' not found")
            who.require_client("create apps")
            app = self._apps.create(
                req.app_name, AppState.INITIALIZING, req.environment_name, who.client_version
            )
            self._apps.publish(
                app.app_id,
                name=req.app_name,
                state=AppState.DEPLOYED,
                function_ids={},
                class_ids={},
                client_version=who.client_version,
            )
        return api_pb2.AppGetOrCreateResponse(app_id=app.app_id)

    async def AppHeartbeat(self, req: api_pb2.AppHeartbeatRequest, who: Principal) -> empty_pb2.Empty:
        who.require_app(req.app_id)
        self._apps.heartbeat(req.app_id)
        return empty_pb2.Empty()

    async def AppPublish(self, req: api_pb2.AppPublishRequest, who: Principal) -> api_pb2.AppPublishResponse:
        who.require_client("publish apps")
        app = self._apps.get(req.app_id)
        if req.app_state == api_pb2.APP_STATE_UNSPECIFIED:
            # `modal serve` republishes its app after each reload without naming a state: it keeps its own.
            state: AppState | None = app.state if app.state != AppState.INITIALIZING else AppState.EPHEMERAL
        else:
            state = _PROTO_TO_STATE.get(req.app_state)
        if state is None:
            raise InvalidArgument(f"AppPublish: unsupported app state {req.app_state}")
        if req.rollback_version:
            raise Unimplemented("Rolling back a deployment is not supported yet")
        previous = set(app.function_ids.values())
        app = self._apps.publish(
            req.app_id,
            name=req.name,
            state=state,
            function_ids=dict(req.function_ids),
            class_ids=dict(req.class_ids),
            client_version=req.client_version or who.client_version,
        )
        self._functions.name_classes(app.app_id, dict(req.class_ids))
        self._schedules.app_published(app)
        for gone in previous - set(app.function_ids.values()):
            await self._containers.stop_function(gone, "its function was removed by a redeploy")
        return api_pb2.AppPublishResponse(url=self._page(app.app_id), deployed_at=app.deployed_at or 0.0)

    async def AppClientDisconnect(
        self, req: api_pb2.AppClientDisconnectRequest, who: Principal
    ) -> empty_pb2.Empty:
        who.require_app(req.app_id)
        reason = "client disconnected"
        if req.reason:
            reason = enum_name(api_pb2.AppDisconnectReason, req.reason, "reason")
        failed = req.reason in _CLIENT_FAILURES
        await self._apps.client_disconnected(req.app_id, reason.lower(), failed)
        if self._apps.get(req.app_id).state == AppState.DETACHED:
            # The app runs on; the leaving client's log stream ends (`modal app logs` can follow it later).
            self._logs.release_followers(req.app_id)
        return empty_pb2.Empty()

    async def AppStop(self, req: api_pb2.AppStopRequest, who: Principal) -> empty_pb2.Empty:
        who.require_app(req.app_id)
        await self._apps.stop(req.app_id, "stopped by request")
        return empty_pb2.Empty()

    async def AppGetByDeploymentName(
        self, req: api_pb2.AppGetByDeploymentNameRequest, who: Principal
    ) -> api_pb2.AppGetByDeploymentNameResponse:
        env = req.environment_name or "main"
        app = self._apps.deployed(req.name, env)
        who.require_app(app.app_id if app is not None else "")  # a container looks up its own app only
        if app is not None:
            return api_pb2.AppGetByDeploymentNameResponse(
                app_id=app.app_id, environment_name=env, lifecycle=lifecycle(app)
            )
        stopped = [a for a in self._apps.all_apps(env) if a.name == req.name]
        if stopped:
            last = stopped[-1]
            return api_pb2.AppGetByDeploymentNameResponse(
                previous_app_id=last.app_id, environment_name=env, lifecycle=lifecycle(last)
            )
        return api_pb2.AppGetByDeploymentNameResponse(environment_name=env)

    async def AppGetLifecycle(
        self, req: api_pb2.AppGetLifecycleRequest, who: Principal
    ) -> api_pb2.AppGetLifecycleResponse:
        who.require_app(req.app_id)
        return api_pb2.AppGetLifecycleResponse(lifecycle=lifecycle(self._apps.get(req.app_id)))

    async def AppGetInfo(self, req: api_pb2.AppGetInfoRequest, who: Principal) -> api_pb2.AppGetInfoResponse:
        who.require_app(req.app_id)
        app = self._apps.get(req.app_id)
        resp = api_pb2.AppGetInfoResponse()
        info = resp.info
        info.app_id = app.app_id
        info.description = app.name or app.description
        info.environment_name = app.environment
        info.lifecycle.CopyFrom(lifecycle(app))
        for tag, function_id in app.function_ids.items():
            info.functions[tag] = function_id
            fn = self._functions.find(function_id)
            if fn is not None and fn.definition:
                resp.function_info_summaries[function_id].CopyFrom(function_summary(fn.definition))
        return resp

    async def AppGetLayout(
        self, req: api_pb2.AppGetLayoutRequest, who: Principal
    ) -> api_pb2.AppGetLayoutResponse:
        who.require_app(req.app_id)
        app = self._apps.get(req.app_id)
        layout = api_pb2.AppLayout()
        for tag, function_id in app.function_ids.items():
            layout.function_ids[tag] = function_id
            fn = self._functions.find(function_id)
            if fn is not None:
                obj = layout.objects.add(object_id=function_id)
                obj.function_handle_metadata.CopyFrom(handle_metadata(fn, fn))
        for tag, class_id in app.class_ids.items():
            layout.class_ids[tag] = class_id
            layout.objects.add(object_id=class_id).class_handle_metadata.SetInParent()
        return api_pb2.AppGetLayoutResponse(app_layout=layout)

    async def AppList(self, req: api_pb2.AppListRequest, who: Principal) -> api_pb2.AppListResponse:
        resp = api_pb2.AppListResponse()
        for app in self._apps.all_apps(req.environment_name or "main"):
            if who.task is not None and app.app_id != who.task.app_id:
                continue  # a container sees its own app only
            resp.apps.add(
                app_id=app.app_id,
                description=app.name or app.description,
                name=app.name,
                state=_STATE_TO_PROTO[app.state],
                created_at=app.created_at,
                stopped_at=app.stopped_at or 0.0,
                n_running_tasks=len(self._containers.for_app(app.app_id)),
            )
        return resp

    async def AppDeploymentHistory(
        self, req: api_pb2.AppDeploymentHistoryRequest, who: Principal
    ) -> api_pb2.AppDeploymentHistoryResponse:
        who.require_app(req.app_id)
        resp = api_pb2.AppDeploymentHistoryResponse()
        records = self._apps.history(req.app_id)
        for record in reversed(records):
            resp.app_deployment_histories.add(
                app_id=record.app_id,
                version=record.version,
                client_version=record.client_version,
                deployed_at=record.deployed_at,
                deployed_by=record.deployed_by or "onshore",
            )
        if records:
            resp.production_app_version = records[-1].version
        return resp
