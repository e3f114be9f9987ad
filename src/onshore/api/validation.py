"""Checks at the edge: the names, tags and ids of every request have a bounded length and the right shape."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from onshore import ids
from onshore.errors import InvalidArgument, quoted

# The client refuses longer names for apps, secrets, mounts and environments (modal/_utils/name_utils.py:
# is_valid_object_name, is_valid_environment_name); the server holds every request to the same bound.
MAX_NAME_CHARS = 64
# Function and class names (tags) have no limit in the client; a Python name of this length is already
# far past any real one.
MAX_TAG_CHARS = 256
# Cursors the server hands out and the client sends back (log entry and output positions).
MAX_CURSOR_CHARS = 128

_NAME_FIELDS = {"app_name", "name", "deployment_name", "environment_name"}
_TAG_FIELDS = {"object_tag", "function_name"}
_CURSOR_FIELDS = {"last_entry_id"}
# Request fields that hold an id this server made, by the kind of object (see ids.PREFIXES).
_ID_FIELDS = {
    "app_id": "app",
    "function_id": "function",
    "existing_function_id": "function",
    "build_function_id": "function",
    "parametrized_function_id": "function",
    "function_call_id": "call",
    "existing_class_id": "class",
    "image_id": "image",
    "existing_image_id": "image",
    "mount_id": "mount",
    "secret_id": "secret",
    "task_id": "task",
    "input_id": "input",
    "parent_input_id": "input",
    "blob_id": "blob",
    "data_blob_id": "blob",
}

# Per request type: its (field name, rule) pairs to check, worked out once from its descriptor.
_PLAN: dict[str, list[tuple[str, str, bool]]] = {}


def _plan(descriptor: Any) -> list[tuple[str, str, bool]]:
    plan = _PLAN.get(descriptor.full_name)
    if plan is None:
        plan = []
        for field in descriptor.fields:
            if field.type != FieldDescriptor.TYPE_STRING:
                continue
            name = field.name
            if name in _NAME_FIELDS:
                rule = "name"
            elif name in _TAG_FIELDS:
                rule = "tag"
            elif name in _CURSOR_FIELDS:
                rule = "cursor"
            elif name in _ID_FIELDS:
                rule = "id"
            else:
                continue
            plan.append((name, rule, field.is_repeated))
        _PLAN[descriptor.full_name] = plan
    return plan


def _check(rpc: str, field: str, rule: str, value: str) -> None:
    if not value:
        return
    if rule == "id":
        kind = _ID_FIELDS[field]
        if not ids.is_id(kind, value):
            prefix = ids.PREFIXES[kind]
            raise InvalidArgument(
                f"{rpc}: {field} {quoted(value)} is not a well-formed {kind} id "
                f"('{prefix}-' and {ids.SUFFIX_CHARS} letters or digits)"
            )
        return
    limit = {"name": MAX_NAME_CHARS, "tag": MAX_TAG_CHARS, "cursor": MAX_CURSOR_CHARS}[rule]
    if len(value) > limit:
        raise InvalidArgument(
            f"{rpc}: {field} is {len(value)} characters long ({quoted(value, 40)}); the limit is {limit}"
        )


def check_request(rpc: str, request: Any) -> None:
    """Refuse a request whose top-level names, tags, cursors or ids are too long or not shaped as ids."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return
    for field, rule, repeated in _plan(descriptor):
        value = getattr(request, field)
        if repeated:
            for item in value:
                _check(rpc, field, rule, item)
        else:
            _check(rpc, field, rule, value)


def enum_name(enum: Any, value: int, field: str) -> str:
    """The name of an enum value a request carries; InvalidArgument for a value the enum does not define."""
    try:
        return str(enum.Name(value))
    except ValueError:
        raise InvalidArgument(f"Unknown {field} value {value}") from None
