"""`forecaster plot`: one live run's forecast fan, from a running service."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forecaster.cli.options import Commands
    from forecaster.reporting.svg import Chart


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "plot",
        help="draw one run's forecast fan and decision, asked of a running service",
        description="Asks the service for the run, its forecast (quantiles from its last "
        "point to its budget) and its decision, and draws them as the batch report does: "
        "the 5-95% and 25-75% bands, the median, the budget line and the last point.",
    )
    parser.add_argument("--study", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--address", help="default FORECASTER_HOST:FORECASTER_PORT")
    parser.add_argument("--out", help="an .svg, .png or .html file (default: RUN.svg)")
    parser.add_argument("--points", type=int, default=24, help="points of the forecast path")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    parser.set_defaults(func=run)


def chart_of(study: str, run: str, address: str, points: int, timeout: float) -> Chart:
    """The fan chart of a run of a study, from the service at address."""
    import grpc

    from forecaster.config import Settings
    from forecaster.errors import InvalidArgumentError
    from forecaster.reporting import svg
    from forecaster.server._proto import forecaster_pb2 as pb
    from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc

    token = Settings.from_env().auth_token
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        try:
            got = stub.GetRun(pb.GetRunRequest(study=study, run=run), timeout=timeout,
                              metadata=metadata).run  # fmt: skip
            reply = stub.GetForecast(
                pb.GetForecastRequest(study=study, run=run, path_points=points),
                timeout=timeout,
                metadata=metadata,
            )
            decision = stub.GetDecision(pb.GetDecisionRequest(study=study, run=run),
                                        timeout=timeout, metadata=metadata).decision  # fmt: skip
        except grpc.RpcError as e:
            raise InvalidArgumentError(f"{address}: {e.code().name}: {e.details()}") from None
    path = reply.path
    levels = list(path.quantile_levels)
    columns = {round(q, 2): [row.values[i] for row in path.quantiles] for i, q in enumerate(levels)}
    if not all(q in columns for q in (0.05, 0.25, 0.5, 0.75, 0.95)):
        raise InvalidArgumentError(f"{address}: the forecast has levels {levels}, not 5-95%.")
    fan = svg.Fan(list(path.steps), columns[0.05], columns[0.25], columns[0.5], columns[0.75],
                  columns[0.95])  # fmt: skip
    last = svg.Series(run, [got.last_step], [got.last_value])
    action = pb.Action.Name(decision.action).removeprefix("ACTION_").lower()
    reason = pb.Reason.Name(decision.reason).removeprefix("REASON_").lower()
    stops = [(got.last_step, got.last_value)] if action == "stop" else [None]
    budget = got.spec.max_step or (path.steps[-1] if path.steps else None)
    chart = svg.fan_chart(f"{study} / {run}: {action} ({reason}), {reply.forecast.model}",
                          [last], [fan], budget=budget, stops=stops,
                          cut_at=[got.last_step])  # fmt: skip
    return chart


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forecaster.config import Settings
    from forecaster.reporting import png, svg

    settings = Settings.from_env()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    address = args.address or f"{host}:{settings.port}"
    chart = chart_of(args.study, args.run, address, args.points, args.timeout)
    out = Path(args.out or f"{args.run.replace('/', '_')}.svg")
    if out.suffix.lower() == ".png":
        png.save(chart, out)
    elif out.suffix.lower() in (".html", ".htm"):
        out.write_text(f"<!DOCTYPE html><html><body>{svg.render(chart)}</body></html>\n")
    else:
        out.write_text(svg.render(chart) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0
