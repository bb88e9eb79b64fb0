"""`forecaster health`: the container's HEALTHCHECK."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    parser.add_argument(
        "--root-cert",
        help="TLS: PEM file of the CA that signed the service's certificate (default with "
        "FORECASTER_TLS_CERT set: FORECASTER_TLS_CLIENT_CA, else the system's roots)",
    )
    parser.add_argument(
        "--server-name", help="TLS: the name in the service's certificate (default: the host)"
    )
    parser.add_argument("--cert", help="mutual TLS: this client's certificate (PEM)")
    parser.add_argument("--key", help="mutual TLS: this client's key (PEM)")
    parser.add_argument("--token", help="bearer token, when health is closed (open_health=false)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the service answers SERVING: the container's HEALTHCHECK."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = Settings.from_env()
    # A service bound to every interface is asked on loopback.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    address = args.address or f"{host}:{settings.port}"
    token = args.token or settings.auth_token
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with _channel(args, settings, address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout,
                metadata=metadata,
            ).status
        except grpc.RpcError as e:
            print(f"{address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{address}: {name}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def _channel(args: argparse.Namespace, settings: Settings, address: str) -> Any:
    """Plain, or TLS when the service has a certificate (FORECASTER_TLS_CERT) or --root-cert."""
    import grpc

    if not (args.root_cert or settings.tls_cert):
        return grpc.insecure_channel(address)

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        read(args.root_cert or settings.tls_client_ca or None), read(args.key), read(args.cert)
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(address, credentials, options=options)
