"""Interceptors: request id + access log, and bearer-token auth."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc

from forecaster.server.logs import request_id

access_log = logging.getLogger("forecaster.access")

# Health checks and reflection need no token: a load balancer or grpcurl must reach them.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _metadata(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for k, v in details.invocation_metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Gives each RPC a request id (the caller's x-request-id, or a new one), sets it for the
    logs, sends it back in the trailing metadata, and writes one access-log line per RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        rid = _metadata(details, "x-request-id") or uuid.uuid4().hex[:16]
        method = details.method

        @contextlib.contextmanager
        def observed(context: grpc.aio.ServicerContext) -> Iterator[None]:
            """Request id set for the RPC's logs and trailers; one access-log line at the end."""
            token = request_id.set(rid)
            start = time.perf_counter()
            context.set_trailing_metadata((("x-request-id", rid),))
            try:
                yield
            finally:
                if access_log.isEnabledFor(logging.INFO):
                    code = context.code() or grpc.StatusCode.OK
                    name = getattr(code, "name", str(code))
                    ms = round((time.perf_counter() - start) * 1e3, 3)
                    access_log.info(
                        "%s %s",
                        method,
                        name,
                        extra={
                            "fields": {
                                "method": method,
                                "code": name,
                                "ms": ms,
                                "peer": context.peer(),
                            }
                        },
                    )
                request_id.reset(token)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with observed(context):
                    return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                with observed(context):
                    async for response in inner_ss(requests, context):
                        yield response

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires "authorization: Bearer <token>" on every RPC but health and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong token: send metadata 'authorization: Bearer <token>' with the "
                "token the service was started with (FORECASTER_AUTH_TOKEN).",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_OPEN_PREFIXES):
            return await continuation(details)
        got = _metadata(details, "authorization") or ""
        if hmac.compare_digest(got.encode(), self._expected.encode()):
            return await continuation(details)
        if details.method.endswith("/StreamMetrics"):
            return self._deny_stream
        return self._deny
