"""`onshore status`: whether the data dir's server runs, its apps and containers (over gRPC), and when its
schedules run next (read from its database: the client's API has no field for a next run)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from grpclib import GRPCError
from grpclib.client import Channel
from modal_proto import api_grpc, api_pb2

from onshore.cli.embedded import CliError, find_running, log_path
from onshore.config import DataDir
from onshore.errors import Unavailable
from onshore.models import ScheduleRecord
from onshore.services.schedule_times import describe
from onshore.store.sqlite import read_schedules

NOT_RUNNING_EXIT = 3  # as `systemctl status` for a unit that is not running
RECENT_STOPPED = 5
RPC_TIMEOUT = 10.0


@dataclass
class Listing:
    apps: list[Any]
    tasks: list[Any]
    schedules: list[ScheduleRecord] = field(default_factory=list)


async def fetch(url: str, token_id: str, token_secret: str) -> Listing:
    """AppList and TaskList, asked the way the modal client asks them."""
    parts = urlsplit(url)
    channel = Channel(parts.hostname or "127.0.0.1", parts.port)
    try:
        stub = api_grpc.ModalClientStub(channel)
        metadata = {"x-modal-token-id": token_id, "x-modal-token-secret": token_secret}
        apps = await stub.AppList(api_pb2.AppListRequest(), metadata=metadata, timeout=RPC_TIMEOUT)
        tasks = await stub.TaskList(api_pb2.TaskListRequest(), metadata=metadata, timeout=RPC_TIMEOUT)
    finally:
        channel.close()
    return Listing(list(apps.apps), list(tasks.tasks))


def _state(value: int) -> str:
    try:
        name = str(api_pb2.AppState.Name(value))  # type: ignore[arg-type]
    except ValueError:
        return str(value)
    return name.removeprefix("APP_STATE_").lower()


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _when(ts: float, now: float) -> str:
    """A local time, with how far away it is: "2026-01-02 09:00:00 (in 42s)"."""
    left = ts - now
    if left < 0:
        away = "due now"
    elif left < 120:
        away = f"in {left:.0f}s"
    elif left < 7200:
        away = f"in {left / 60:.0f} min"
    elif left < 2 * 86400:
        away = f"in {left / 3600:.1f} h"
    else:
        away = f"in {left / 86400:.1f} days"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({away})"


def render(listing: Listing, show_all: bool, now: float | None = None) -> list[str]:
    stopped_state = api_pb2.APP_STATE_STOPPED
    live = [a for a in listing.apps if a.state != stopped_state]
    stopped = sorted((a for a in listing.apps if a.state == stopped_state), key=lambda a: a.created_at)
    hidden = 0
    if not show_all and len(stopped) > RECENT_STOPPED:
        hidden = len(stopped) - RECENT_STOPPED
        stopped = stopped[hidden:]
    shown = sorted(live + stopped, key=lambda a: a.created_at)
    lines = []
    if shown:
        lines.append("Apps:")
        rows: list[tuple[str, ...]] = [("APP ID", "NAME", "STATE", "CONTAINERS")]
        rows += [
            (a.app_id, a.name or a.description or "-", _state(a.state), str(a.n_running_tasks)) for a in shown
        ]
        lines += _table(rows)
    else:
        lines.append("Apps: none")
    if hidden:
        lines.append(f"  ({hidden} older stopped apps not shown; `onshore status --all` lists them)")
    if listing.tasks:
        lines.append("Containers:")
        rows = [("TASK ID", "APP ID", "APP")]
        rows += [(t.task_id, t.app_id, t.app_description or "-") for t in listing.tasks]
        lines += _table(rows)
    else:
        lines.append("Containers: none")
    if listing.schedules:
        now = time.time() if now is None else now
        names = {a.app_id: a.name or a.description or a.app_id for a in listing.apps}
        lines.append("Schedules:")
        rows = [("APP", "FUNCTION", "SCHEDULE", "NEXT RUN")]
        rows += [
            (names.get(s.app_id, s.app_id), s.tag, describe(s.spec), _when(s.next_at, now))
            for s in sorted(listing.schedules, key=lambda s: s.next_at)
        ]
        lines += _table(rows)
    return lines


def fetch_resources(http_url: str, token_id: str, token_secret: str) -> list[dict[str, Any]]:
    """The server's nodes, as GET /_onshore/resources tells them."""
    request = urllib.request.Request(
        http_url.rstrip("/") + "/_onshore/resources",
        headers={"x-modal-token-id": token_id, "x-modal-token-secret": token_secret},
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT) as response:
        body = json.loads(response.read())
    nodes = body.get("nodes") if isinstance(body, dict) else None
    return nodes if isinstance(nodes, list) else []


def render_resources(nodes: list[dict[str, Any]]) -> list[str]:
    lines = ["Resources:"]
    for index, node in enumerate(nodes):
        prefix = f"  node {index}: " if len(nodes) > 1 else "  "
        cpus = f"{node['cpus']:g}" if node["cpus"] else "?"
        memory = f"{node['memory_mb']}" if node["memory_mb"] else "?"
        lines.append(
            f"{prefix}CPU: {node['cpus_reserved']:g} of {cpus} reserved; "
            f"memory: {node['memory_mb_reserved']} of {memory} MiB reserved"
        )
        gpus = node.get("gpus") or []
        if not gpus:
            note = f" ({node['gpu_note']})" if node.get("gpu_note") else ""
            lines.append(f"  GPUs: none{note}")
            continue
        free = sum(1 for g in gpus if not g["task_id"])
        lines.append(f"  GPUs: {free} of {len(gpus)} free")
        rows: list[tuple[str, ...]] = [("GPU", "MODEL", "MEMORY", "HELD BY")]
        for g in gpus:
            model = g["model"] + (" (emulated)" if g["emulated"] else "")
            held = f"{g['task_id']} ({g['function']})" if g["task_id"] else "free"
            rows.append((f"#{g['index']}", model, f"{g['memory_mb']} MiB", held))
        lines += ["  " + line for line in _table(rows)]
    return lines


def cmd_status(data: DataDir, show_all: bool = False) -> int:
    server = find_running(data)
    if server is None:
        print(f"No Onshore server is running for {data.root}.")
        return NOT_RUNNING_EXIT
    print(f"Onshore server running at {server.url} (pid {server.pid})")
    print(f"  data dir: {data.root}")
    if log_path(data).exists():
        print(f"  log: {log_path(data)}")
    token = data.read_json(data.token_file)
    if not token:
        raise CliError(f"No token in {data.token_file}: cannot ask the server for its apps")
    try:
        listing = asyncio.run(fetch(server.url, str(token["token_id"]), str(token["token_secret"])))
    except GRPCError as exc:
        raise CliError(f"The server refused to list its apps: {exc.message or exc.status.name}") from None
    except (TimeoutError, OSError) as exc:
        raise CliError(f"Could not reach the server at {server.url}: {exc}") from None
    try:
        listing.schedules = read_schedules(data.database)
    except Unavailable as exc:
        print(f"  (schedules not shown: {exc})")
    for line in render(listing, show_all):
        print(line)
    if server.http_url:
        try:
            nodes = fetch_resources(server.http_url, str(token["token_id"]), str(token["token_secret"]))
        except (OSError, ValueError) as exc:  # e.g. an older server without the resources page
            print(f"Resources: unknown (the server at {server.http_url} did not say: {exc})")
        else:
            for line in render_resources(nodes):
                print(line)
    return 0
