"""The reads behind the dashboard, the CLI and the client API (ListPoints,
ListDecisionHistory, ListRunSummaries, GetRunSummary) and StopRun, through the real server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, start_live_server, study_spec


@pytest.fixture
def stub_manual(tmp_path: Path) -> Iterator[pb_grpc.CurveServiceStub]:
    server = start_live_server(tmp_path / "s.db", allow_manual_stop=True)
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.CurveServiceStub(channel)
    server.stop()


def code_of(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value.code(), info.value.details()


def make(stub, runs=("r",), n=25):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("s", target=2.2)))
    for run in runs:
        stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name=run)))
        stub.ReportMetrics(
            pb.ReportMetricsRequest(study="s", run=run, points=points(range(10, 10 * n + 1, 10)))
        )


def test_points_come_back_in_pages_exactly_as_stored(stub_manual):
    make(stub_manual)
    stub_manual.ReportMetrics(
        pb.ReportMetricsRequest(
            study="s", run="r", points=[pb.Point(step=300, value=math.inf, lr=0.5)]
        )
    )
    got, token, pages = [], "", 0
    while True:
        reply = stub_manual.ListPoints(
            pb.ListPointsRequest(study="s", run="r", page_size=7, page_token=token)
        )
        got.extend(reply.points)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert pages == 4 and [p.step for p in got] == [*range(10, 251, 10), 300]
    assert [p.value for p in got[:25]] == [p.value for p in points(range(10, 251, 10))]
    assert math.isinf(got[-1].value) and got[-1].lr == 0.5 and not got[0].HasField("lr")
    code, details = code_of(
        stub_manual.ListPoints, pb.ListPointsRequest(study="s", run="r", page_token="abc")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "next_page_token" in details
    code, _ = code_of(
        stub_manual.ListPoints, pb.ListPointsRequest(study="s", run="r", page_size=10**6)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_history_keeps_each_change_and_pages(stub_manual):
    make(stub_manual, n=3)  # 3 points: WARMUP
    stub_manual.ReportMetrics(
        pb.ReportMetricsRequest(study="s", run="r", points=points(range(40, 301, 10)))
    )
    stub_manual.ReportMetrics(
        pb.ReportMetricsRequest(study="s", run="r", points=[pb.Point(step=310, value=math.nan)])
    )
    reply = stub_manual.ListDecisionHistory(pb.ListDecisionHistoryRequest(study="s", run="r"))
    reasons = [pb.Reason.Name(c.decision.reason) for c in reply.changes]
    assert reasons[0] == "REASON_WARMUP" and reasons[-1] == "REASON_DIVERGED"
    assert all(a != b for a, b in zip(reasons, reasons[1:], strict=False))  # changes only
    assert all(c.decided_at_s > 0 and c.decision.explanation for c in reply.changes)
    assert reply.changes[-1].decision.at_step == 310
    first = stub_manual.ListDecisionHistory(
        pb.ListDecisionHistoryRequest(study="s", run="r", page_size=1)
    )
    assert len(first.changes) == 1 and first.next_page_token
    rest = stub_manual.ListDecisionHistory(
        pb.ListDecisionHistoryRequest(study="s", run="r", page_token=first.next_page_token)
    )
    assert [c.decision.reason for c in [*first.changes, *rest.changes]] == [
        c.decision.reason for c in reply.changes
    ]


def test_run_summaries_page_and_carry_the_forecast_of_running_runs(stub_manual):
    make(stub_manual, runs=("a", "b", "c"))
    stub_manual.FinishRun(pb.FinishRunRequest(study="s", run="c", state=pb.RUN_STATE_STOPPED))
    first = stub_manual.ListRunSummaries(pb.ListRunSummariesRequest(study="s", page_size=2))
    assert [s.run.spec.name for s in first.runs] == ["a", "b"] and first.next_page_token
    rest = stub_manual.ListRunSummaries(
        pb.ListRunSummariesRequest(study="s", page_token=first.next_page_token)
    )
    assert [s.run.spec.name for s in rest.runs] == ["c"] and not rest.next_page_token
    a, c = first.runs[0], rest.runs[0]
    assert list(a.forecast.steps) == [1000] and len(a.forecast.quantiles[0].values) == 5
    assert a.HasField("incumbent") and a.HasField("prob_beat_incumbent")
    assert not c.HasField("forecast") and c.saved_steps == 1000 - 250
    one = stub_manual.GetRunSummary(pb.GetRunSummaryRequest(study="s", run="a")).summary
    assert one.run.spec.name == "a" and list(one.forecast.steps) == [1000]
    code, details = code_of(
        stub_manual.GetRunSummary, pb.GetRunSummaryRequest(study="s", run="ghost")
    )
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details


def test_stop_run_is_stop_manual_from_then_on(stub_manual):
    make(stub_manual)
    d = stub_manual.StopRun(pb.StopRunRequest(study="s", run="r", note="alice")).decision
    assert (d.action, d.reason, d.policy) == (pb.ACTION_STOP, pb.REASON_MANUAL, "manual")
    assert "alice" in d.explanation and d.expected_saved_steps == 1000 - 250
    after = stub_manual.ReportMetrics(
        pb.ReportMetricsRequest(study="s", run="r", points=points([260]))
    ).decision
    assert (after.action, after.reason) == (pb.ACTION_STOP, pb.REASON_MANUAL)
    assert stub_manual.GetDecision(pb.GetDecisionRequest(study="s", run="r")).decision.reason == (
        pb.REASON_MANUAL
    )
    stub_manual.FinishRun(pb.FinishRunRequest(study="s", run="r", state=pb.RUN_STATE_STOPPED))
    again = stub_manual.StopRun(pb.StopRunRequest(study="s", run="r", note="bob")).decision
    assert again.reason == pb.REASON_MANUAL and "alice" in again.explanation  # the first kept
    stub_manual.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="done")))
    stub_manual.FinishRun(pb.FinishRunRequest(study="s", run="done", state=pb.RUN_STATE_FINISHED))
    code, details = code_of(stub_manual.StopRun, pb.StopRunRequest(study="s", run="done"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "finished" in details
    code, _ = code_of(stub_manual.StopRun, pb.StopRunRequest(study="s", run="ghost"))
    assert code == grpc.StatusCode.NOT_FOUND
