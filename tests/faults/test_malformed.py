"""A bounded, seeded fuzz of every implemented RPC with malformed bodies: precise refusals, never a crash."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from grpclib.const import Cardinality, Status

from tests.conftest import ServerProcess
from tests.faults.rawgrpc import (
    Answer,
    call_raw,
    hello,
    implemented_rpcs,
    raw_channel,
    rpc_specs,
)

SEED = 20250607
CONCURRENCY = 8
# An error message is a sentence or two; the router cuts longer ones (with a note that it did).
MAX_MESSAGE_CHARS = 1200


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return "".join(rng.choice("abcXYZ019-_./ ") for _ in range(rng.randint(1, 12)))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randint(1, 12))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.uniform(0.0, 2.0)
    return rng.randint(0, 3)


# Made-up ids of the server's shape, for fields that name objects (by the end of the field's name).
_ID_PREFIXES = {
    "app_id": "ap",
    "function_id": "fu",
    "function_call_id": "fc",
    "task_id": "ta",
    "image_id": "im",
    "input_id": "in",
    "secret_id": "st",
    "blob_id": "bl",
    "class_id": "cs",
}


def _made_up_id(field: FieldDescriptor, rng: random.Random) -> str | None:
    suffix = next((k for k in _ID_PREFIXES if field.name.endswith(k)), None)
    if suffix is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
        return None
    return _ID_PREFIXES[suffix] + "-" + "".join(rng.choice("ABCxyz0189") for _ in range(22))


def populated(message_type: Any, rng: random.Random, shaped_ids: bool = False) -> Any:
    """A request with each top-level field set to a small random value (nested messages left empty);
    with `shaped_ids`, fields that hold ids get made-up ids of the server's shape."""
    message = message_type()
    for field in message_type.DESCRIPTOR.fields:
        made_up = _made_up_id(field, rng) if shaped_ids else None
        if made_up is not None:
            setattr(message, field.name, made_up)
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if repeated:
                getattr(message, field.name).add()
            else:
                getattr(message, field.name).SetInParent()
        elif repeated:
            getattr(message, field.name).append(_scalar(field, rng))
        else:
            setattr(message, field.name, _scalar(field, rng))
    return message


def malformed_bodies(message_type: Any, rng: random.Random) -> list[tuple[str, bytes]]:
    """Bodies that do not decode, or decode to values no client sends, for one request type."""
    fields = list(message_type.DESCRIPTOR.fields)
    number = fields[0].number if fields else 1
    valid = populated(message_type, rng).SerializeToString()
    bodies = [
        # Bodies that decode, with values no client sends: random text where names and ids go, and
        # made-up ids of the right shape (they name nothing).
        ("random fields", valid),
        ("made-up ids", populated(message_type, rng, shaped_ids=True).SerializeToString()),
        ("garbage", rng.randbytes(rng.randint(1, 48))),
        ("garbage", rng.randbytes(rng.randint(49, 400))),
        # A varint of 11 bytes: longer than any 64-bit value.
        ("huge varint", _tag(number, 0) + b"\xff" * 10 + b"\x01"),
        # A length-delimited field that claims 2 GiB and carries 3 bytes.
        ("huge length", _tag(number, 2) + _varint(2**31) + b"abc"),
        # A field number of 0 is never valid.
        ("field zero", b"\x02\x01x"),
        # Wire type 7 does not exist.
        ("bad wire type", _tag(number, 7) + b"\x00"),
    ]
    if len(valid) > 1:
        bodies.append(("truncated", valid[: rng.randint(1, len(valid) - 1)]))
    strings = [f for f in fields if f.type == FieldDescriptor.TYPE_STRING]
    if strings:
        field = rng.choice(strings)
        bodies.append(("invalid utf-8", _tag(field.number, 2) + b"\x03\xff\xfe\xfd"))
    messages = [f for f in fields if f.type == FieldDescriptor.TYPE_MESSAGE]
    if messages:
        field = rng.choice(messages)
        bodies.append(("garbage submessage", _tag(field.number, 2) + b"\x04\xff\xff\xff\xff"))
    scalars = [f for f in fields if f.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)]
    if scalars:
        # A field sent with a wire type other than its own.
        field = rng.choice(scalars)
        wire = 0 if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES) else 2
        bodies.append(("wrong wire type", _tag(field.number, wire) + (b"\x05" if wire == 0 else b"\x02ab")))
    enums = [f for f in fields if f.type == FieldDescriptor.TYPE_ENUM]
    for field in enums[:3]:
        for value in (999, -7):
            message = message_type()
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
            bodies.append((f"enum {field.name}={value}", message.SerializeToString()))
    return bodies


def _bad(answer: Answer) -> str:
    """Why an answer is not a precise refusal ("" when it is fine)."""
    if answer.status in (Status.INTERNAL, Status.UNKNOWN, Status.UNAVAILABLE):
        return f"{answer.status.name}: {answer.message[:300]}"
    if "Traceback" in answer.message or re.search(r'File ".*", line \d+', answer.message):
        return f"a traceback in the reply: {answer.message[:300]}"
    if len(answer.message) > MAX_MESSAGE_CHARS:
        return f"a reply message of {len(answer.message)} chars"
    return ""


async def test_malformed_requests_to_every_implemented_rpc(fault_server: ServerProcess) -> None:
    rng = random.Random(SEED)
    metadata = fault_server.token_metadata
    channel = raw_channel(fault_server)
    specs = rpc_specs()
    log_before = len(fault_server.log_text())
    try:
        implemented = await implemented_rpcs(channel, metadata)
        assert len(implemented) >= 40, implemented
        cases = [
            (name, kind, body) for name in implemented for kind, body in malformed_bodies(specs[name][1], rng)
        ]
        rng.shuffle(cases)
        gate = asyncio.Semaphore(CONCURRENCY)
        started = time.monotonic()

        async def one(name: str, kind: str, body: bytes) -> tuple[str, str, Answer]:
            async with gate:
                cardinality: Cardinality = specs[name][0]
                return name, kind, await call_raw(channel, name, cardinality, body, metadata, timeout=3.0)

        answers = await asyncio.gather(*(one(*case) for case in cases))
        elapsed = time.monotonic() - started
        failures = [f"{name} ({kind}): {why}" for name, kind, a in answers if (why := _bad(a))]
        statuses: dict[str, int] = {}
        for _name, _kind, answer in answers:
            statuses[answer.status.name] = statuses.get(answer.status.name, 0) + 1
        print(
            f"fuzzed {len(implemented)} implemented RPCs (of {len(specs)}) with {len(answers)} malformed "
            f"requests in {elapsed:.1f}s (seed {SEED}); statuses: {dict(sorted(statuses.items()))}"
        )
        assert not failures, "\n".join(failures)
        # Still serving, on the same connection and on a new one.
        await hello(fault_server)
    finally:
        channel.close()
    # The server logged each refusal in one line: no tracebacks, no errors.
    log = fault_server.log_text()[log_before:]
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]
