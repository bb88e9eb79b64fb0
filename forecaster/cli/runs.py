"""`forecaster runs STUDY`: a study's runs with their decision and forecast at the budget."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli.remote import Remote, add_address, name_of, num, table

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "runs", help="a study's runs: state, last value, decision, forecast at the budget"
    )
    parser.add_argument("study")
    add_address(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.server._proto import forecaster_pb2 as pb

    remote = Remote(args)
    try:
        summaries = remote.pages(
            remote.stub.ListRunSummaries,
            lambda token: pb.ListRunSummariesRequest(study=args.study, page_token=token),
            "runs",
        )
    finally:
        remote.close()
    if not summaries:
        print(f"study {args.study!r} has no runs yet")
        return 0
    rows = []
    for s in summaries:
        r = s.run
        d = s.decision
        decision = "-"
        if s.HasField("decision"):
            decision = (
                f"{name_of(pb.Action, d.action, 'ACTION_')} / "
                f"{name_of(pb.Reason, d.reason, 'REASON_')}"
            )
        forecast = "-"
        if s.HasField("forecast") and s.forecast.quantiles:
            q = list(s.forecast.quantiles[-1].values)
            forecast = f"{num(q[len(q) // 2])} [{num(q[0])}, {num(q[-1])}]"
        p_beat = num(s.prob_beat_incumbent, 3) if s.HasField("prob_beat_incumbent") else "-"
        rows.append(
            [
                r.spec.name,
                name_of(pb.RunState, r.state, "RUN_STATE_"),
                str(r.last_step),
                num(r.last_value),
                num(r.best_value),
                decision,
                forecast,
                p_beat,
            ]
        )
    headers = ["run", "state", "step", "last", "best", "decision",
               "final: median [5%, 95%]", "P(beat incumbent)"]  # fmt: skip
    print(table(headers, rows, right=(2, 3, 4, 7)))
    return 0
