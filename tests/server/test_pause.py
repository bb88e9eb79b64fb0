"""PAUSE and RankRuns through the real server: an unpromising run is paused, not stopped,
when the study asks for it, and the ranking puts the runs whose rest buys most first."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import start_live_server, study_spec


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[pb_grpc.CurveServiceStub]:
    server = start_live_server(tmp_path / "s.db")
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.CurveServiceStub(channel)
    server.stop()


def curve(floor: float, steps: range) -> list[pb.Point]:
    return [pb.Point(step=s, value=floor + 3.0 * (s / 10.0) ** -0.5) for s in steps]


def pausing_study(stub: pb_grpc.CurveServiceStub, name: str = "s") -> None:
    params = struct_pb2.Struct()
    params.update({"pause": True})
    spec = study_spec(name, policy=pb.PolicySettings(name="forecast", params=params))
    stub.CreateStudy(pb.CreateStudyRequest(study=spec))


def run(stub: pb_grpc.CurveServiceStub, name: str, floor: float, upto: int) -> pb.Decision:
    stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name=name)))
    decision = pb.Decision()
    for start in range(10, upto + 1, 50):  # batches: each one a new forecast, a new vote
        batch = curve(floor, range(start, min(start + 50, upto + 1), 10))
        reply = stub.ReportMetrics(pb.ReportMetricsRequest(study="s", run=name, points=batch))
        decision = reply.decision
    return decision


def test_an_unpromising_run_is_paused_and_ranked_below_a_promising_one(stub):
    pausing_study(stub)
    run(stub, "best", 2.0, 1000)
    stub.FinishRun(pb.FinishRunRequest(study="s", run="best", state=pb.RUN_STATE_FINISHED))
    bad = run(stub, "bad", 4.0, 400)
    assert bad.action == pb.ACTION_PAUSE and bad.reason == pb.REASON_UNPROMISING
    assert bad.expected_saved_steps == 600
    state = stub.GetRun(pb.GetRunRequest(study="s", run="bad")).run.state
    assert state == pb.RUN_STATE_RUNNING  # paused, not stopped: it may be resumed
    good = run(stub, "better", 1.9, 300)
    assert good.action == pb.ACTION_CONTINUE

    ranking = stub.RankRuns(pb.RankRunsRequest(study="s"))
    assert [r.run for r in ranking.runs] == ["better", "bad"]  # "best" is finished: not ranked
    first, second = ranking.runs
    assert first.gain_rate > second.gain_rate >= 0 and not first.paused and second.paused
    assert second.decision.action == pb.ACTION_PAUSE
    assert first.reference == "incumbent" and first.remaining_steps == 700
    # The rate is the expected gain per fraction of the budget still to run.
    assert math.isclose(first.gain_rate, first.expected_gain / 0.7, rel_tol=1e-9)
    assert first.forecast_final < 2.3 < second.forecast_final
    assert first.prob_beat_incumbent > 0.5 > second.prob_beat_incumbent
    assert 2.0 < ranking.incumbent < 2.4
    assert [r.run for r in stub.RankRuns(pb.RankRunsRequest(study="s", limit=1)).runs] == ["better"]


def test_without_an_incumbent_runs_are_priced_against_their_own_best(stub):
    pausing_study(stub)
    run(stub, "alone", 2.0, 200)
    stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="empty")))
    ranking = stub.RankRuns(pb.RankRunsRequest(study="s"))
    assert [r.run for r in ranking.runs] == ["alone", "empty"]
    alone, empty = ranking.runs
    assert alone.reference == "own_best" and alone.expected_gain > 0
    assert not empty.HasField("gain_rate") and not empty.HasField("decision")
    # The study's incumbent is the forecast "alone" offers the others: "empty" is priced by it.
    assert empty.reference == "incumbent" and math.isfinite(ranking.incumbent)


def test_pause_is_off_by_default_and_a_bad_setting_is_named(stub):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("s")))
    run(stub, "best", 2.0, 1000)
    stub.FinishRun(pb.FinishRunRequest(study="s", run="best", state=pb.RUN_STATE_FINISHED))
    bad = run(stub, "bad", 4.0, 400)
    assert bad.action == pb.ACTION_STOP and bad.reason == pb.REASON_UNPROMISING
    params = struct_pb2.Struct()
    params.update({"pause": "yes"})
    spec = study_spec("t", policy=pb.PolicySettings(name="forecast", params=params))
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateStudy(pb.CreateStudyRequest(study=spec))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pause" in info.value.details()


def test_rank_runs_refuses_what_it_cannot_serve(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.RankRuns(pb.RankRunsRequest(study="missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    pausing_study(stub)
    with pytest.raises(grpc.RpcError) as info:
        stub.RankRuns(pb.RankRunsRequest(study="s", limit=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.RankRuns(pb.RankRunsRequest(study="x" * 1000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
