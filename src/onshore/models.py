"""Plain domain records shared by services and stores (no protobuf here)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Protocol


class AppState(enum.Enum):
    INITIALIZING = "initializing"
    EPHEMERAL = "ephemeral"
    DETACHED = "detached"
    DEPLOYED = "deployed"
    STOPPED = "stopped"


LIVE_APP_STATES = (AppState.INITIALIZING, AppState.EPHEMERAL, AppState.DETACHED, AppState.DEPLOYED)


class Encodable(Protocol):
    """A decoded protobuf message: what a request held, passed on as it is."""

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


# An input or a result on its way from one RPC to another: the message the sender's request held (the hot path
# hands it on without encoding and decoding it again), or its encoding (what the store keeps).
Payload = bytes | Encodable


def encoded(payload: Payload) -> bytes:
    return payload if isinstance(payload, bytes) else bytes(payload.SerializeToString())


@dataclass
class App:
    app_id: str
    description: str
    state: AppState
    created_at: float
    environment: str = "main"
    name: str = ""
    stopped_at: float | None = None
    deployed_at: float | None = None
    version: int = 0
    client_version: str = ""
    # object tag -> id, as published by the client (AppPublish)
    function_ids: dict[str, str] = field(default_factory=dict)
    class_ids: dict[str, str] = field(default_factory=dict)
    last_heartbeat: float = 0.0


@dataclass
class DeploymentRecord:
    app_id: str
    version: int
    deployed_at: float
    client_version: str
    deployed_by: str = ""


@dataclass
class RetryPolicy:
    max_retries: int = 0
    initial_delay_ms: int = 1000
    backoff_coefficient: float = 2.0
    max_delay_ms: int = 60000

    def delay_for(self, retry_count: int) -> float:
        """Seconds to wait before the given retry (1-based)."""
        delay = self.initial_delay_ms * (self.backoff_coefficient ** max(0, retry_count - 1))
        return min(delay, self.max_delay_ms) / 1000.0


# What a container is reserved when its function asks for nothing (Modal's documented defaults).
DEFAULT_CPU = 0.125
DEFAULT_MEMORY_MB = 128


@dataclass
class GpuChoice:
    """One acceptable GPU configuration: `count` GPUs of `type` ("T4", "A100-80GB", "ANY"...)."""

    type: str
    count: int = 1


@dataclass
class GpuRequest:
    """A function's GPUs: the first of `choices` that can be placed (gpu=["H100", "A100"] lists two)."""

    choices: list[GpuChoice] = field(default_factory=list)

    def describe(self) -> str:
        text = ", ".join(f"{c.type}:{c.count}" if c.count != 1 else c.type for c in self.choices)
        return f"[{text}]" if len(self.choices) > 1 else text


@dataclass
class ScheduleSpec:
    """When a function runs by itself: a cron expression in a time zone, or a period.

    A period adds its calendar units (years, months, with the day of the month clamped, then weeks and days)
    and then its clock units, like dateutil's relativedelta, in UTC.
    """

    kind: str = "period"  # or "cron"
    cron: str = ""
    timezone: str = ""  # an IANA zone name; "" is UTC
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: float = 0.0


@dataclass
class ScheduleRecord:
    """A live app's scheduled function, where its schedule stands."""

    function_id: str
    app_id: str
    tag: str
    spec: ScheduleSpec
    anchor: float  # when its period counts from: the app's latest deployment
    next_at: float  # when it runs next
    last_fired_at: float | None = None
    last_call_id: str = ""


@dataclass
class FunctionSpec:
    """What the control plane needs to know about a function to schedule it."""

    tag: str
    module_name: str = ""
    timeout_secs: int = 300
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    min_containers: int = 0
    max_containers: int = 0  # 0: no limit
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    max_concurrent_inputs: int = 1
    max_inputs: int = 0  # 0: unlimited inputs per container
    secret_ids: list[str] = field(default_factory=list)
    mount_ids: list[str] = field(default_factory=list)
    image_id: str = ""
    is_class: bool = False
    is_generator: bool = False
    object_dependencies: list[str] = field(default_factory=list)
    cpu: float = DEFAULT_CPU  # cores reserved per container (a request: the limit is cpu_limit)
    memory_mb: int = DEFAULT_MEMORY_MB  # MiB reserved per container
    gpu: GpuRequest | None = None
    startup_timeout_secs: int = 0  # 0: timeout_secs
    batch_max_size: int = 0
    batch_wait_ms: int = 0
    target_concurrent_inputs: int = 0  # 0: max_concurrent_inputs
    schedule: ScheduleSpec | None = None


@dataclass
class AutoscalerOverride:
    """Function.update_autoscaler(...) at run time: the settings it gave (None: the decorator's stays)."""

    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: float | None = None
    target_concurrent_inputs: int | None = None

    def apply(self, spec: FunctionSpec) -> FunctionSpec:
        changes = {k: v for k, v in vars(self).items() if v is not None}
        return dataclasses.replace(spec, **changes) if changes else spec


@dataclass
class FunctionTarget:
    """A live function the autoscaler keeps containers for: its id, its app and its settings."""

    function_id: str
    app_id: str
    spec: FunctionSpec


@dataclass
class FunctionRecord:
    function_id: str
    app_id: str
    spec: FunctionSpec
    # The serialized api_pb2.Function the client sent (empty until FunctionCreate).
    definition: bytes = b""
    # The serialized FunctionPrecreateRequest / handle metadata the client gave at precreate.
    precreate: bytes = b""
    definition_id: str = ""
    # Set on a function bound to class parameters (FunctionBindParams).
    parent_function_id: str = ""
    serialized_params: bytes = b""
    created_at: float = 0.0
    # A variant made by with_options/with_concurrency/with_batching: the serialized FunctionOptions it was
    # bound with; its spec is then its own (the parent's definition with these options applied).
    options: bytes = b""
    autoscaler: AutoscalerOverride | None = None  # update_autoscaler(); a redeploy clears it


@dataclass
class ClassRecord:
    class_id: str
    app_id: str
    tag: str = ""
    metadata: bytes = b""


@dataclass
class Secret:
    secret_id: str
    env: dict[str, str]
    created_at: float
    name: str = ""
    environment: str = "main"
    app_id: str = ""  # anonymous secrets belong to an app
    last_used_at: float | None = None


@dataclass
class Token:
    token_id: str
    secret_hash: str
    created_at: float
    label: str = ""
    revoked_at: float | None = None
    kind: str = "api"  # "api": the gRPC API's clients; "proxy": web endpoints with requires_proxy_auth=True


@dataclass
class MountFile:
    filename: str
    sha256_hex: str
    mode: int = 0o644


@dataclass
class Mount:
    mount_id: str
    files: list[MountFile]
    created_at: float
    deployment_name: str = ""
    namespace: int = 0
    app_id: str = ""
    # "client": the modal client package itself (the container's environment provides it)
    kind: str = "files"
    client_version: str = ""


@dataclass
class ImageConfig:
    """What a built image declares to the containers that run on it."""

    python_version: str = ""  # full version of the image's interpreter, e.g. "3.11.7"
    workdir: str = "/root"
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    user: str = ""
    python: str = ""  # the interpreter inside the container; "" = the host's (the default image)
    layers: list[str] = field(default_factory=list)  # process runtime: layer dirs, bottom to top
    ref: str = ""  # docker runtime: the engine's image id


@dataclass
class ImageRecord:
    image_id: str
    content_hash: str
    definition: bytes
    created_at: float
    status: str = "ready"  # building | ready | failed
    error: str = ""
    python_version: str = ""
    config: ImageConfig | None = None
    runtime: str = ""
    base_image_ids: list[str] = field(default_factory=list)
    build_seconds: float = 0.0


@dataclass
class CallRecord:
    """A function call whose inputs and outputs must outlive the caller (spawned calls)."""

    function_call_id: str
    function_id: str
    app_id: str
    invocation_type: int
    created_at: float
    call_type: int = 0


@dataclass
class StoredInput:
    input_id: str
    function_call_id: str
    function_id: str
    idx: int
    payload: bytes  # serialized FunctionInput
    retry_count: int = 0
    done: bool = False


@dataclass
class OutputRecord:
    """One finished input of a call, as the caller will receive it."""

    input_id: str
    function_call_id: str
    idx: int
    status: int  # GenericResult.GenericStatus number
    result: Payload  # a GenericResult (encoded where it is stored)
    data_format: int = 0
    task_id: str = ""
    input_started_at: float = 0.0
    output_created_at: float = 0.0
    retry_count: int = 0
    entry_id: int = 0


@dataclass
class KvObject:
    """A named (or ephemeral) Dict, Queue or Volume: its identity; its contents live in their own tables."""

    object_id: str
    kind: str  # "dict" | "queue" | "volume"
    created_at: float
    name: str = ""  # "" for an ephemeral one
    environment: str = "main"
    ephemeral: bool = False
    last_heartbeat: float = 0.0
    fs_version: int = 0  # a volume's VolumeFS version (1 or 2); 0 for the others


@dataclass
class VolumeEntry:
    """One file, directory or symbolic link of a volume's committed tree."""

    path: str  # relative to the volume's root, "/"-separated, no leading "/" ("a/b.txt")
    kind: str  # "file" | "dir" | "symlink"
    mode: int = 0o644  # permission bits
    size: int = 0
    mtime: float = 0.0
    object: str = ""  # a file's content sha256 (hex); a symlink's target


@dataclass
class VolumeMountRef:
    """A volume a function mounts: which, where, and how."""

    volume_id: str
    target: str  # absolute path in the container
    read_only: bool = False
    sub_path: str = ""  # a directory of the volume to mount instead of its root
