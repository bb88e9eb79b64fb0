"""The one table that maps our exceptions to gRPC status codes."""

from __future__ import annotations

import grpc

from forecaster import errors

# Most specific first: a subclass before the class it refines.
_CODES: tuple[tuple[type[errors.ForecasterError], grpc.StatusCode], ...] = (
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.StartingError, grpc.StatusCode.UNAVAILABLE),
)


def status_code(error: errors.ForecasterError) -> grpc.StatusCode:
    """The status for an error raised on purpose; INTERNAL for a base ForecasterError."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
