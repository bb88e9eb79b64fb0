"""`forecaster why STUDY RUN`: every change of a run's decision, with its explanation."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli.remote import Remote, add_address, name_of, num, table, when

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "why", help="a run's decision history: each change of action or reason, and why"
    )
    parser.add_argument("study")
    parser.add_argument("run")
    add_address(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.server._proto import forecaster_pb2 as pb

    remote = Remote(args)
    try:
        changes = remote.pages(
            remote.stub.ListDecisionHistory,
            lambda token: pb.ListDecisionHistoryRequest(
                study=args.study, run=args.run, page_token=token
            ),
            "changes",
        )
    finally:
        remote.close()
    if not changes:
        print(f"run {args.run!r} of study {args.study!r} has no decision yet (no points)")
        return 0
    rows = []
    for c in changes:
        d = c.decision
        probs = ", ".join(f"{k}={v:.3g}" for k, v in sorted(d.probabilities.items()))
        rows.append(
            [
                str(d.at_step),
                when(c.decided_at_s),
                name_of(pb.Action, d.action, "ACTION_"),
                name_of(pb.Reason, d.reason, "REASON_"),
                probs or "-",
                num(c.forecast_final) if c.HasField("forecast_final") else "-",
                d.explanation,
            ]
        )
    headers = ["step", "time (UTC)", "action", "reason", "probabilities", "forecast", "why"]
    print(table(headers, rows, right=(0, 5)))
    return 0
