"""Decisions through the real server: votes that survive a restart, the incumbent from other
runs, a classic rule over the network, and policy settings refused at CreateStudy."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, start_live_server, study_spec


def policy(name: str = "forecast", **params: float) -> pb.PolicySettings:
    struct = struct_pb2.Struct()
    struct.update(params)
    return pb.PolicySettings(name=name, params=struct)


def curve(steps, level: float) -> list[pb.Point]:
    return [pb.Point(step=s, value=level + 3.0 * (s / 10.0) ** -0.5) for s in steps]


def report(stub, run, pts, study="sweep") -> pb.Decision:
    resp = stub.ReportMetrics(pb.ReportMetricsRequest(study=study, run=run, points=pts))
    return resp.decision


def start(stub, run, study="sweep"):
    stub.StartRun(pb.StartRunRequest(study=study, run=pb.RunSpec(name=run)))


def test_stop_votes_survive_a_restart(tmp_path):
    server = start_live_server(tmp_path / "votes.db", max_points_per_batch=100)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            spec = study_spec(target=1.0, policy=policy(hysteresis=2, target_margin=0))
            stub.CreateStudy(pb.CreateStudyRequest(study=spec))
            start(stub, "r1")
            first = report(stub, "r1", points(range(1, 120, 2)))
            assert first.action == pb.ACTION_CONTINUE and "stop vote 1 of 2" in first.explanation
    finally:
        server.stop()
    server = start_live_server(tmp_path / "votes.db", max_points_per_batch=100)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            again = stub.GetDecision(pb.GetDecisionRequest(study="sweep", run="r1")).decision
            assert again == first  # recomputed from the store: the same vote, not a second
            d = report(stub, "r1", points(range(121, 160, 2)))
            assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_TARGET_UNREACHABLE
    finally:
        server.stop()


def test_a_run_that_cannot_beat_a_finished_run_is_unpromising(stub):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(policy=policy(hysteresis=1))))
    start(stub, "good")
    report(stub, "good", curve(range(10, 1001, 10), level=1.0))
    stub.FinishRun(pb.FinishRunRequest(study="sweep", run="good", state=pb.RUN_STATE_FINISHED))
    start(stub, "bad")
    d = report(stub, "bad", curve(range(10, 301, 10), level=2.0))
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_UNPROMISING
    assert d.probabilities["p_beat_incumbent"] < 0.05
    assert "incumbent 1.3" in d.explanation and d.expected_saved_steps == 700
    start(stub, "better")
    d = report(stub, "better", curve(range(10, 301, 10), level=0.8))
    assert d.action == pb.ACTION_CONTINUE and d.probabilities["p_beat_incumbent"] > 0.5


def test_the_median_rule_over_the_network(stub):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(policy=policy("median"))))
    for i, level in enumerate([1.0, 1.1, 1.2]):
        start(stub, f"peer{i}")
        report(stub, f"peer{i}", curve(range(10, 501, 10), level))
    start(stub, "r")
    d = report(stub, "r", curve(range(10, 501, 10), 2.0))
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_UNPROMISING
    assert d.policy == "median" and "median" in d.explanation
    # GetForecast still works for a policy that never needed one.
    fc = stub.GetForecast(pb.GetForecastRequest(study="sweep", run="r")).forecast
    assert fc.steps == [1000] and fc.model


@pytest.mark.parametrize(
    "spec, word",
    [
        (dict(policy=policy(epsilon=1.5)), "epsilon"),
        (dict(policy=policy(epsilon=0.0)), "epsilon"),
        (dict(policy=policy(grace_steps=5000)), "grace_steps"),
        (dict(policy=policy(hysteresis=0)), "hysteresis"),
        (dict(policy=policy("asha", eta=0.5)), "eta"),
        (dict(target=1.0, direction=pb.DIRECTION_UNSPECIFIED), "target"),
    ],
)
def test_contradictory_settings_are_refused_naming_the_setting(stub, spec, word):
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(**spec)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert word in info.value.details()
