"""Object ids in Modal's style: a two-letter prefix and a random suffix."""

import secrets
import string

PREFIXES = {
    "app": "ap",
    "function": "fu",
    "class": "cs",
    "call": "fc",
    "input": "in",
    "task": "ta",
    "mount": "mo",
    "image": "im",
    "secret": "st",
    "blob": "bl",
    "token": "ak",
    "proxy_token": "wk",
    "dict": "di",
    "queue": "qu",
    "volume": "vo",
    "definition": "de",
    "environment": "en",
}


_ALPHABET = string.ascii_letters + string.digits
SUFFIX_CHARS = 22


def new_id(kind: str) -> str:
    """A prefixed id with 22 alphanumeric characters, the shape the client's CLI recognises as an id."""
    # 22 characters drawn from 62 (a negligible bias from the modulo is fine for unique ids).
    suffix = "".join(_ALPHABET[b % 62] for b in secrets.token_bytes(SUFFIX_CHARS))
    if kind == "task" and suffix.endswith("V"):
        # The client takes a task id ending in "V" for a V2 sandbox's (and execs into it another way).
        suffix = suffix[:-1] + _ALPHABET[secrets.randbelow(47)]  # a-z, A-U: never "V"
    return f"{PREFIXES[kind]}-" + suffix


def is_id(kind: str, value: str) -> bool:
    """Whether `value` has the shape of an id new_id(kind) makes (it may still name nothing)."""
    prefix, _, suffix = value.partition("-")
    return prefix == PREFIXES[kind] and len(suffix) == SUFFIX_CHARS and suffix.isascii() and suffix.isalnum()


def new_secret() -> str:
    return "as-" + secrets.token_urlsafe(24)
