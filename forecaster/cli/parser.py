"""The `forecaster` parser: one sub-command per module, and `main`, the console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from forecaster import __version__
from forecaster.cli import (
    batch,
    calibrate,
    demo,
    evaluate,
    health,
    import_logs,
    law,
    plot,
    replay,
    report,
    runs,
    serve,
    studies,
    train,
    why,
)
from forecaster.errors import ForecasterError

COMMANDS = (
    serve,
    demo,
    health,
    studies,
    runs,
    why,
    plot,
    evaluate,
    replay,
    train,
    calibrate,
    import_logs,
    law,
    batch,
    report,
)  # --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster",
        description="Forecasts learning curves of training jobs and tells them to stop or "
        "continue.",
    )
    parser.add_argument("--version", action="version", version=f"forecaster {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
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
