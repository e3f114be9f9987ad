"""Placement: which node (and which GPUs) a container gets, against what each node has and has reserved."""

from __future__ import annotations

from dataclasses import dataclass, field

from onshore.models import FunctionSpec, GpuChoice, GpuRequest
from onshore.runtimes.base import GpuDevice, Resources
from onshore.runtimes.gpu_types import ANY, CATALOG, canonical, known

EPSILON = 1e-9
UNKNOWN_NODE = Resources(0.0, 0)  # no CPU or memory count (0): only GPUs and the container count limit


@dataclass(frozen=True)
class Request:
    """What one container of a function is reserved."""

    cpu: float
    memory_mb: int
    gpu: GpuRequest | None = None

    def describe(self) -> str:
        text = f"{self.cpu:g} CPU, {self.memory_mb} MiB"
        return text + (f", GPU {self.gpu.describe()}" if self.gpu else "")


def request_of(spec: FunctionSpec) -> Request:
    return Request(spec.cpu, spec.memory_mb, spec.gpu if spec.gpu and spec.gpu.choices else None)


@dataclass(frozen=True)
class Allocation:
    """What a container holds while it lives: freed when it ends."""

    node: int
    cpu: float
    memory_mb: int
    gpus: tuple[GpuDevice, ...] = ()
    substituted: str = ""  # "" or what it asked for and got instead, for the logs


@dataclass
class NodeUsage:
    resources: Resources
    cpu: float = 0.0
    memory_mb: int = 0
    gpus_in_use: set[int] = field(default_factory=set)  # device indices


def gpu_candidates(choice: GpuChoice, devices: tuple[GpuDevice, ...], substitute: bool) -> list[GpuDevice]:
    """The GPUs of a node that can serve `choice`, best first: those of the exact model; or, with
    `substitute` and where the node has none of that model (and it was not asked for with "!"), those with
    at least its memory, the closest first."""
    wanted = canonical(choice.type)
    if wanted == ANY:
        return sorted(devices, key=lambda g: (g.memory_mb, g.index))  # the smallest that will do
    exact = [g for g in devices if g.model == wanted]
    if not substitute:
        return exact
    if exact or choice.type.strip().endswith("!"):
        return []
    need = CATALOG.get(wanted, 0)
    bigger = [g for g in devices if g.memory_mb >= need]
    return sorted(bigger, key=lambda g: (g.memory_mb - need, g.model, g.index))


def choose_gpus(
    request: GpuRequest, node: NodeUsage, strict: bool
) -> tuple[tuple[GpuDevice, ...], GpuChoice] | None:
    """The GPUs this node can give the request now, or None. Every choice's exact model comes first, in
    the request's order; then (unless strict) substitutes for the choices whose model the node lacks."""
    for substitute in (False, True) if not strict else (False,):
        for choice in request.choices:
            candidates = gpu_candidates(choice, node.resources.gpus, substitute)
            free = [g for g in candidates if g.index not in node.gpus_in_use]
            if len(free) >= choice.count:
                return tuple(free[: choice.count]), choice
    return None


def _fits(node: NodeUsage, request: Request) -> bool:
    res = node.resources
    if res.cpus > 0 and node.cpu + request.cpu > res.cpus + EPSILON:
        return False
    return not (res.memory_mb > 0 and node.memory_mb + request.memory_mb > res.memory_mb)


def describe_gpus(devices: tuple[GpuDevice, ...]) -> str:
    counts: dict[str, int] = {}
    for g in devices:
        counts[g.model] = counts.get(g.model, 0) + 1
    emulated = " (emulated)" if devices and all(g.emulated for g in devices) else ""
    return ", ".join(f"{n} x {model}" for model, n in counts.items()) + emulated


class Ledger:
    """The reservations of every node. Pure bookkeeping: the container service asks it before each start."""

    def __init__(self, nodes: list[Resources], strict_gpus: bool = False) -> None:
        """nodes: what each node has ([]: not known yet, counted as one node of unknown CPUs and memory)."""
        self.strict_gpus = strict_gpus
        self.nodes = [NodeUsage(n) for n in nodes or [UNKNOWN_NODE]]

    def set_nodes(self, nodes: list[Resources]) -> None:
        """The backend's nodes became known (the docker engine answers after start): reservations stay."""
        old = self.nodes
        self.nodes = [NodeUsage(n) for n in nodes or [UNKNOWN_NODE]]
        for new, prior in zip(self.nodes, old, strict=False):
            new.cpu, new.memory_mb, new.gpus_in_use = prior.cpu, prior.memory_mb, prior.gpus_in_use

    def never(self, request: Request) -> str:
        """Why no node could ever run the request, even with nothing else running ("" when one could)."""
        if request.gpu is not None:
            unknown = [c.type for c in request.gpu.choices if not known(c.type)]
            if unknown:
                return f"unknown GPU type {unknown[0]!r}; the types are {', '.join(['any', *CATALOG])}"
        for node in self.nodes:
            empty = NodeUsage(node.resources)
            if _fits(empty, request) and (
                request.gpu is None or choose_gpus(request.gpu, empty, self.strict_gpus) is not None
            ):
                return ""
        return f"it asks for {request.describe()} per container, and {self.describe()}"

    def describe(self) -> str:
        """What the machine has, for errors: "this server has 2 CPUs, 7936 MiB and no GPUs"."""
        parts = []
        for node in self.nodes:
            res = node.resources
            gpus = describe_gpus(res.gpus) or "no GPUs" + (f" ({res.gpu_note})" if res.gpu_note else "")
            cpus = f"{res.cpus:g} CPUs" if res.cpus > 0 else "its CPUs"
            parts.append(f"{cpus}, {res.memory_mb} MiB of memory and {gpus}")
        if len(parts) == 1:
            return "this server has " + parts[0]
        return "its nodes have " + "; ".join(parts)

    def fit(self, request: Request) -> Allocation | None:
        """Where the request fits now (reserving nothing), or None: it waits for something to end."""
        for index, node in enumerate(self.nodes):
            if not _fits(node, request):
                continue
            if request.gpu is None:
                return Allocation(index, request.cpu, request.memory_mb)
            chosen = choose_gpus(request.gpu, node, self.strict_gpus)
            if chosen is None:
                continue
            gpus, choice = chosen
            models = {g.model for g in gpus}
            asked = canonical(choice.type)
            substituted = ""
            if asked != ANY and models != {asked}:
                got = ", ".join(g.label for g in gpus)
                substituted = f"asked for {choice.type}, which this server does not have: runs on {got}"
            return Allocation(index, request.cpu, request.memory_mb, gpus, substituted)
        return None

    def reserve(self, allocation: Allocation) -> None:
        node = self.nodes[allocation.node]
        node.cpu += allocation.cpu
        node.memory_mb += allocation.memory_mb
        node.gpus_in_use.update(g.index for g in allocation.gpus)

    def place(self, request: Request) -> Allocation | None:
        allocation = self.fit(request)
        if allocation is not None:
            self.reserve(allocation)
        return allocation

    def release(self, allocation: Allocation) -> None:
        if allocation.node >= len(self.nodes):
            return
        node = self.nodes[allocation.node]
        node.cpu = max(0.0, node.cpu - allocation.cpu)
        node.memory_mb = max(0, node.memory_mb - allocation.memory_mb)
        node.gpus_in_use.difference_update(g.index for g in allocation.gpus)

    def copy(self) -> Ledger:
        """A copy to try releases and reservations on (which idle containers to stop for a request)."""
        trial = Ledger([n.resources for n in self.nodes], self.strict_gpus)
        for mine, theirs in zip(trial.nodes, self.nodes, strict=True):
            mine.cpu, mine.memory_mb, mine.gpus_in_use = theirs.cpu, theirs.memory_mb, set(theirs.gpus_in_use)
        return trial
