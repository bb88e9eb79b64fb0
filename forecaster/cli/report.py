"""`forecaster report`: a batch's results as one self-contained HTML page."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "report",
        help="a forecaster batch results file as one self-contained HTML page",
        description="Per study: the runs' curves with their forecast fans (5-95% and 25-75%), "
        "the budget line and where each run could have stopped; the compute the policy would "
        "have saved; the worst forecasts where the runs' ends are known. Inline SVG (or PNG "
        "with --png): the page fetches nothing.",
    )
    parser.add_argument("results", help="the .parquet written by forecaster batch")
    parser.add_argument("--out", default="report.html", help="the HTML file to write")
    parser.add_argument("--png", action="store_true", help="inline PNG charts instead of SVG")
    parser.add_argument("--max-studies", type=int, default=24, help="studies drawn, at most")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.reporting import report

    written = report.write(args.results, args.out, png=args.png, max_studies=args.max_studies)
    print(f"wrote {written}")
    return 0
