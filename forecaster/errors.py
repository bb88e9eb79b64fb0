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
