"""The command line: `forecaster serve | demo | health`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from forecaster import __version__
from forecaster.config import Settings, settings_table
from forecaster.errors import ForecasterError


def _serve(args: argparse.Namespace) -> int:
    from forecaster.server import logs
    from forecaster.server.app import serve

    settings = Settings.from_env(
        host=args.host, port=args.port, db=args.db, log_level=args.log_level
    )
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from forecaster import demo

    return demo.main(args.address, args.db)


def _health(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster",
        description="Forecasts learning curves of training jobs and tells them to stop or "
        "continue.",
    )
    parser.add_argument("--version", action="version", version=f"forecaster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rows = "\n".join(f"  {env:<36} default {default}" for _, env, default in settings_table())
    serve = sub.add_parser(
        "serve",
        help="run the gRPC service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every setting can also come from the environment:\n{rows}",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 50051; 0 = any)")
    serve.add_argument("--db", help="database URL (default sqlite:/// in the user data dir)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo",
        help="simulate training runs against a service and watch forecasts and decisions evolve",
    )
    demo.add_argument("--address", help="a running service (default: start one in-process)")
    demo.add_argument(
        "--db", help="database URL for the in-process service (default: a temporary file)"
    )
    demo.set_defaults(func=_demo)

    health = sub.add_parser("health", help="ask a service's gRPC health check; exit 0 when SERVING")
    health.add_argument("--address", help="default FORECASTER_HOST:FORECASTER_PORT")
    health.add_argument("--service", default="", help="service name ('' = overall)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ForecasterError as e:
        print(f"forecaster: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
