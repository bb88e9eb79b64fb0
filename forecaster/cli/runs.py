"""`forecaster runs STUDY`: a study's runs with their decision and forecast at the budget;
`--rank`: its running and paused runs, the one whose rest buys most per unit of compute first."""

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
    parser.add_argument(
        "--rank",
        action="store_true",
        help="the running and paused runs ranked by expected gain per fraction of the budget "
        "left (RankRuns): which run deserves the next GPU hour",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="with --rank: at most this many runs (0: as many as the service's max_page_size)",
    )
    add_address(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.server._proto import forecaster_pb2 as pb

    if args.rank:
        return _rank(args)
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


def _rank(args: argparse.Namespace) -> int:
    from forecaster.server._proto import forecaster_pb2 as pb

    remote = Remote(args)
    try:
        # 0 asks for the service's most: a ranking is read whole, best first.
        reply = remote.call(
            remote.stub.RankRuns, pb.RankRunsRequest(study=args.study, limit=args.limit or 10**6)
        )
    finally:
        remote.close()
    if not reply.runs:
        print(f"study {args.study!r} has no running or paused runs")
        return 0

    def opt(r: pb.RankedRun, name: str, digits: int = 4) -> str:
        return num(getattr(r, name), digits) if r.HasField(name) else "-"

    rows = []
    for i, r in enumerate(reply.runs, 1):
        decision = "-"
        if r.HasField("decision"):
            d = r.decision
            decision = (
                f"{name_of(pb.Action, d.action, 'ACTION_')} / "
                f"{name_of(pb.Reason, d.reason, 'REASON_')}"
            )
        rows.append(
            [
                str(i),
                r.run,
                "paused" if r.paused else "running",
                str(r.last_step),
                str(r.remaining_steps),
                opt(r, "forecast_final"),
                opt(r, "prob_beat_incumbent", 3),
                opt(r, "expected_gain", 3),
                opt(r, "gain_rate", 3),
                r.reference if r.HasField("gain_rate") else "-",
                decision,
            ]
        )
    incumbent = num(reply.incumbent) if reply.HasField("incumbent") else "none"
    print(f"incumbent {incumbent}; gain: expected improvement at the budget over the reference, "
          "relative; rate: gain per fraction of the budget left")  # fmt: skip
    headers = ["rank", "run", "state", "step", "left", "final (median)", "P(beat)", "gain",
               "rate", "reference", "decision"]  # fmt: skip
    print(table(headers, rows, right=(0, 3, 4, 5, 6, 7, 8)))
    return 0
