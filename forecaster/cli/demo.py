"""`forecaster demo`: simulated training runs against a service, forecasts and decisions."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="simulate training runs against a service and watch forecasts and decisions evolve",
    )
    parser.add_argument("--address", help="a running service (default: start one in-process)")
    parser.add_argument(
        "--db", help="database URL for the in-process service (default: a temporary file)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster import demo

    return demo.main(args.address, args.db)
