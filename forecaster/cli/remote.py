"""What `forecaster studies`, `runs` and `why` share: the --address/--token flags, one call to
the service with its error as one line, and plain aligned tables (no extra dependency)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from forecaster.config import Settings
from forecaster.errors import ForecasterError


class ServiceError(ForecasterError):
    """The service refused or could not be reached: its status and its own words."""


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the service (default FORECASTER_HOST:FORECASTER_PORT)")
    parser.add_argument("--token", help="bearer token (default FORECASTER_AUTH_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


class Remote:
    """A channel to the service, and calls whose errors are one line for the terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        import grpc

        from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc

        settings = Settings.from_env()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
        self.address = args.address or f"{host}:{settings.port}"
        token = args.token if args.token is not None else settings.auth_token
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = args.timeout
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.CurveServiceStub(self.channel)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        import grpc

        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            raise ServiceError(f"{self.address}: {e.code().name}: {e.details()}") from None

    def pages(
        self, method: Callable[..., Any], make: Callable[[str], Any], field: str
    ) -> list[Any]:
        """Every item of a paged list: make(token) builds each page's request."""
        out: list[Any] = []
        token = ""
        while True:
            reply = self.call(method, make(token))
            out.extend(getattr(reply, field))
            token = reply.next_page_token
            if not token:
                return out

    def close(self) -> None:
        self.channel.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in `right` aligned right (numbers)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def num(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def name_of(enum: Any, value: int, prefix: str) -> str:
    """REASON_TARGET_UNREACHABLE -> "target_unreachable"."""
    return str(enum.Name(value)).removeprefix(prefix).lower()
