"""`forecaster studies`: the service's studies, with their runs by state."""

from __future__ import annotations

import argparse
from functools import partial
from typing import TYPE_CHECKING, Any

from forecaster.cli.remote import Remote, add_address, name_of, num, table

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser("studies", help="list a service's studies and their runs by state")
    add_address(parser)
    parser.set_defaults(func=run)


def _runs_page(study: str, token: str) -> Any:
    from forecaster.server._proto import forecaster_pb2 as pb

    return pb.ListRunsRequest(study=study, page_token=token)


def run(args: argparse.Namespace) -> int:
    from forecaster.server._proto import forecaster_pb2 as pb

    remote = Remote(args)
    try:
        studies = remote.pages(
            remote.stub.ListStudies,
            lambda token: pb.ListStudiesRequest(page_token=token),
            "studies",
        )
        rows = []
        for s in studies:
            spec = s.spec
            runs = remote.pages(remote.stub.ListRuns, partial(_runs_page, spec.name), "runs")
            states = [name_of(pb.RunState, r.state, "RUN_STATE_") for r in runs]
            rows.append(
                [
                    spec.name,
                    spec.metric,
                    name_of(pb.Direction, spec.direction, "DIRECTION_"),
                    str(spec.max_step or "-"),
                    num(spec.target) if spec.HasField("target") else "-",
                    *(str(states.count(k)) for k in ("running", "stopped", "finished", "failed")),
                ]
            )
    finally:
        remote.close()
    if not rows:
        print(f"{remote.address}: no studies yet")
        return 0
    headers = ["study", "metric", "direction", "budget", "target", "running", "stopped",
               "finished", "failed"]  # fmt: skip
    print(table(headers, rows, right=range(3, 9)))
    return 0
