"""Domain errors raised by services; the API layer maps each to one gRPC status."""


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
