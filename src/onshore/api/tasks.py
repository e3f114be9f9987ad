"""gRPC handlers for containers as users see them: list, info, stop, and access to run commands in one."""

from __future__ import annotations

import ipaddress

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import Conflict, PermissionDenied
from onshore.services.apps import AppService
from onshore.services.containers import TaskState
from onshore.services.execs import ExecService
from onshore.services.tasks import TaskDirectory


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class TaskHandlers:
    def __init__(self, apps: AppService, tasks: TaskDirectory, execs: ExecService, router_url: str) -> None:
        self._apps = apps
        self._tasks = tasks
        self._execs = execs
        self._router_url = router_url

    async def TaskList(self, req: api_pb2.TaskListRequest, who: Principal) -> api_pb2.TaskListResponse:
        environment = req.environment_name or "main"
        app_filter = req.app_id
        if who.task is not None:
            who.require_app(app_filter or who.task.app_id)
            app_filter = who.task.app_id
        resp = api_pb2.TaskListResponse()
        for task in self._tasks.live(app_filter):
            app = self._apps.find(task.app_id)
            if app is None or app.environment != environment:
                continue
            resp.tasks.add(
                task_id=task.task_id,
                app_id=task.app_id,
                app_description=app.name or app.description,
                started_at=task.started_at,
                enqueued_at=task.started_at,
            )
        return resp

    async def TaskGetInfo(
        self, req: api_pb2.TaskGetInfoRequest, who: Principal
    ) -> api_pb2.TaskGetInfoResponse:
        record = self._tasks.find(req.task_id)
        who.require_app(record.app_id)
        resp = api_pb2.TaskGetInfoResponse(app_id=record.app_id)
        resp.info.id = record.task_id
        resp.info.enqueued_at = record.enqueued_at
        resp.info.started_at = record.started_at
        resp.info.finished_at = record.finished_at
        return resp

    async def ContainerStop(
        self, req: api_pb2.ContainerStopRequest, who: Principal
    ) -> api_pb2.ContainerStopResponse:
        if who.task is not None:
            if req.task_id and req.task_id != who.task.task_id:
                raise PermissionDenied("A container can only stop itself")
            who.task.state = TaskState.STOPPING  # it stops fetching inputs; its process ends by itself
            return api_pb2.ContainerStopResponse()
        await self._tasks.stop(req.task_id, graceful=req.graceful)
        return api_pb2.ContainerStopResponse()

    async def TaskGetCommandRouterAccess(
        self, req: api_pb2.TaskGetCommandRouterAccessRequest, who: Principal
    ) -> api_pb2.TaskGetCommandRouterAccessResponse:
        task = self._tasks.live_task(req.task_id)
        who.require_app(task.app_id)
        if who.peer_host and not _is_loopback(who.peer_host):
            # The client talks plain HTTP to a command router only when its server URL is on localhost, and
            # Onshore serves no TLS yet.
            raise Conflict(
                "Running commands in containers (`modal container exec`, `modal shell`) works only for "
                f"clients on the server's machine (this one connects from {who.peer_host}): the modal client "
                "needs TLS for the command router of a remote server, which Onshore does not serve yet"
            )
        holder = who.token_id or (f"container:{who.task.task_id}" if who.task else who.kind)
        token = self._execs.tokens.issue(task.task_id, holder)
        return api_pb2.TaskGetCommandRouterAccessResponse(jwt=token, url=self._router_url)
