"""The exceptions the service raises on purpose.

Each maps to one gRPC status code in forecaster/server/errors.py; the docstring of each says
whether retrying can help.
"""

from __future__ import annotations


class ForecasterError(Exception):
    """Base for errors raised on purpose."""


class InvalidArgumentError(ForecasterError):
    """The request is malformed. Retrying the same request never helps."""


class NotFoundError(ForecasterError):
    """A study or run does not exist. Create it first; retrying alone does not help."""


class AlreadyExistsError(ForecasterError):
    """A study or run of that name exists with another definition. Retrying does not help."""


class FailedPreconditionError(ForecasterError):
    """The state forbids it (e.g. the run is finished). Retrying does not help."""


class ResourceExhaustedError(ForecasterError):
    """A limit was exceeded (batch size, message size). Send less per request."""


class StoreUnavailableError(ForecasterError):
    """The database could not be reached or is locked. Retrying later may help."""


class UnauthenticatedError(ForecasterError):
    """No token, or a token the service does not know. Retrying with the same token never
    helps: send a valid "authorization: Bearer <token>"."""


class StartingError(ForecasterError):
    """The service is still starting (loading its learned models). Retrying shortly helps."""


class StartupError(ForecasterError):
    """The service cannot start as configured (port in use, unreadable TLS file): the message
    names the setting to change."""


def shown(value: object, limit: int = 64) -> str:
    """A value for an error message: its repr, cut to `limit` characters with the full length
    said, so a long input never makes a long message (gRPC clients refuse large trailers)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes | list | tuple | dict) else len(text)
    return f"{text[:limit]}... ({size} long)"
