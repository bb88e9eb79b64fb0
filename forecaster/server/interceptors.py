"""Interceptors: request id, access log and metrics with the real status; bearer-token auth.

Both wrap a handler in a handler of the same kind (unary or streaming on either side), so a
stream refused for its token ends UNAUTHENTICATED like a unary call, and its access-log line
says so. Requests that do not decode become INVALID_ARGUMENT here: grpc would answer UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from forecaster.server.auth import UNAUTHENTICATED_MESSAGE, Authenticator
from forecaster.server.logs import request_id
from forecaster.server.metrics import ServiceMetrics

access_log = logging.getLogger("forecaster.access")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


def _metadata(pairs: Any, key: str) -> str | None:
    for k, v in pairs or ():
        if k == key:
            return v if isinstance(v, str) else v.decode(errors="replace")
    return None


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """The RPC's metadata value of key, if any."""
    return _metadata(context.invocation_metadata(), key)


def authorization_of(context: grpc.aio.ServicerContext) -> str | None:
    """The RPC's "authorization" metadata value, if any."""
    return _metadata(context.invocation_metadata(), "authorization")


class _Undecodable:
    """What a request that did not parse becomes, so the handler can refuse it by name."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError, RuntimeError) as e:
            return _Undecodable(e)

    return decode


async def _refuse_undecodable(context: grpc.aio.ServicerContext, request: _Undecodable) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request message does not parse as this method's type "
        f"({type(request.error).__name__}): send a message of the method's request type.",
    )


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
    async for request in requests:
        if isinstance(request, _Undecodable):
            await _refuse_undecodable(context, request)
        yield request


def same_kind(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    stream: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
    deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of handler's kind calling unary (one response) or stream (responses)."""
    de = deserializer if deserializer is not None else handler.request_deserializer
    se = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, de, se)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, de, se)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, de, se)
    return grpc.stream_stream_rpc_method_handler(stream, de, se)


# New request ids: 8 random hex digits for the process, then a counter (16 hex digits, as a
# uuid4's first 16 were; unique without a system call per RPC, which uuid4 made).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def _inner(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    fn = handler.unary_unary or handler.unary_stream or handler.stream_unary
    return fn if fn is not None else handler.stream_stream


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Gives each RPC a request id (the caller's x-request-id, or a new one), sets it for the
    logs, sends it back in the trailing metadata, writes one access-log line per RPC with its
    real status code, counts it in the metrics, and refuses messages that do not decode."""

    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        self.metrics = metrics
        # The wrapped handler of each method, built once (not per RPC), with the handler it
        # wraps: a method's handler is the same object call after call (the servicer's).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, details.method)
        if len(self._wrapped) < 1_000:  # the service's methods; never grows with callers
            self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = _inner(handler)
        metrics = self.metrics

        @contextlib.contextmanager
        def observed(context: grpc.aio.ServicerContext) -> Iterator[None]:
            """Request id set for the RPC's logs and trailers; one access-log line at the end."""
            rid = (_metadata(context.invocation_metadata(), "x-request-id") or "")[:64]
            rid = rid or f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
            token = request_id.set(rid)
            start = time.perf_counter()
            context.set_trailing_metadata((("x-request-id", rid),))
            code: Any = None
            try:
                yield
            except grpc.aio.AbortError:
                code = context.code()
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                if code is None:
                    code = context.code() or grpc.StatusCode.OK
                name = getattr(code, "name", str(code))
                seconds = time.perf_counter() - start
                if metrics is not None:
                    metrics.rpcs.labels(method=method, code=name).inc()
                    metrics.rpc_seconds.labels(method=method, code=name).observe(seconds)
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "%s %s",
                        method,
                        name,
                        extra={
                            "fields": {
                                "method": method,
                                "code": name,
                                "ms": round(seconds * 1e3, 3),
                                "peer": context.peer(),
                            }
                        },
                    )
                request_id.reset(token)

        streaming_in = handler.request_streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with observed(context):
                if streaming_in:
                    request = _checked(request, context)
                elif isinstance(request, _Undecodable):
                    await _refuse_undecodable(context, request)
                return await inner(request, context)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with observed(context):
                if streaming_in:
                    request = _checked(request, context)
                elif isinstance(request, _Undecodable):
                    await _refuse_undecodable(context, request)
                responses = inner(request, context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:  # a handler that writes with context.write (health's Watch)
                    await responses

        return same_kind(handler, unary, stream, _safe(handler.request_deserializer))


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a known bearer token on every RPC, but health and reflection when open.

    The tenant a token stands for is the servicer's to resolve (the same Authenticator)."""

    def __init__(
        self, auth: Authenticator, *, open_health: bool = True, open_reflection: bool = True
    ) -> None:
        self.auth = auth
        self._open = tuple(
            prefix
            for prefix, is_open in (
                (HEALTH_PREFIX, open_health),
                (REFLECTION_PREFIX, open_reflection),
            )
            if is_open
        )

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or (self._open and details.method.startswith(self._open)):
            return handler
        authorization = _metadata(details.invocation_metadata, "authorization")
        if self.auth.tenant_for(authorization) is not None:
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

        async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            yield  # unreachable: makes this an async generator, as a streaming handler is

        return same_kind(handler, deny, deny_stream)
