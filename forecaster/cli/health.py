"""`forecaster health`: the container's HEALTHCHECK."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from forecaster.config import Settings

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "health", help="ask a service's gRPC health check; exit 0 when SERVING"
    )
    parser.add_argument("--address", help="default FORECASTER_HOST:FORECASTER_PORT")
    parser.add_argument("--service", default="", help="service name ('' = overall)")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the service answers SERVING: the container's HEALTHCHECK."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = Settings.from_env()
    # A service bound to every interface is asked on loopback.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    address = args.address or f"{host}:{settings.port}"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            ).status
        except grpc.RpcError as e:
            print(f"{address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{address}: {name}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1
