"""Domain errors raised by services (the API layer maps each to one gRPC status), and bounds on their text."""


class OnshoreError(Exception):
    """Base class: a user-facing error with a precise message."""


class NotFound(OnshoreError):
    pass


class AlreadyExists(OnshoreError):
    pass


class InvalidArgument(OnshoreError):
    pass


class Conflict(OnshoreError):
    """The object is in a state that does not allow the request (FAILED_PRECONDITION)."""


class PermissionDenied(OnshoreError):
    pass


class Unauthenticated(OnshoreError):
    pass


class ResourceExhausted(OnshoreError):
    pass


class Unimplemented(OnshoreError):
    """A capability Onshore does not provide yet; the message names what is missing."""


class Unavailable(OnshoreError):
    """The server cannot serve the request now (its database or disk); the message names path and cause."""


# An error message travels in a gRPC trailer: a user's value quoted in it is cut to this many characters,
# and the whole message to MAX_MESSAGE_CHARS (a long header costs the server time to encode).
MAX_QUOTED_CHARS = 80
MAX_MESSAGE_CHARS = 1000


def quoted(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """repr(value) for an error message, cut to about `limit` characters with a note of its full length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} chars)" if isinstance(value, str | bytes) else ""
    return f"{text[:limit]}...{size}"


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message (or a value quoted unquoted) cut to `limit` characters, saying that it was cut."""
    if len(message) <= limit:
        return message
    return message[:limit] + f"... (cut from {len(message)} chars)"
