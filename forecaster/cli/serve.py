"""`forecaster serve`: run the gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import TYPE_CHECKING

from forecaster.config import SECURITY_AND_LIMIT_SETTINGS, Settings, settings_table

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    rows = "\n".join(f"  {env:<36} default {default}" for _, env, default in settings_table())
    parser = commands.add_parser(
        "serve",
        help="run the gRPC service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every setting can also come from the environment:\n{rows}",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 50051; 0 = any)")
    parser.add_argument(
        "--db",
        help="database: a file path or sqlite:///path (default: in the user data dir), or "
        "postgresql://user@host:port/database for several replicas",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    # issue 20: dashboard
    parser.add_argument(
        "--http-port", type=int, help="serve the dashboard on this port (default 0: no dashboard)"
    )
    parser.add_argument(
        "--allow-manual-stop",
        action="store_true",
        default=None,
        help="allow StopRun and the dashboard's stop button (default off)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="server processes sharing the port (default 1; more need a postgresql:// --db)",
    )
    parser.add_argument("--log-format", help="json, text, or auto (default: text on a terminal)")
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for name in SECURITY_AND_LIMIT_SETTINGS:
        default = defaults[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None,
                help=f"(default {'on' if default else 'off'})",
            )  # fmt: skip
        else:
            parser.add_argument(flag, type=type(default), help=f"(default {default!r})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.server import logs
    from forecaster.server.app import serve

    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        db=args.db,
        log_level=args.log_level,
        http_port=args.http_port,
        allow_manual_stop=args.allow_manual_stop,
        processes=args.processes,
        log_format=args.log_format,
        **{name: getattr(args, name) for name in SECURITY_AND_LIMIT_SETTINGS},
    )
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
    return 0
