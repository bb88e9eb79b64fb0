"""The public API through the real server on a loopback port: happy paths and bad input."""

from __future__ import annotations

import math
import queue

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server.servicer import ACK_EVERY_BATCH
from tests.conftest import points, study_spec


def make_run(stub, study="sweep", run="r1", **study_kw):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(study, **study_kw)))
    stub.StartRun(pb.StartRunRequest(study=study, run=pb.RunSpec(name=run)))


def code_of(call, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


def stored(stub, study="sweep", run="r1") -> pb.Run:
    return stub.GetRun(pb.GetRunRequest(study=study, run=run)).run


def test_create_study_is_idempotent_and_conflicts_name_the_field(stub):
    first = stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(target=2.0)))
    again = stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(target=2.0)))
    assert first.created and not again.created
    assert again.study.spec.target == 2.0
    code, details = code_of(
        stub.CreateStudy,
        pb.CreateStudyRequest(study=study_spec(target=2.0, direction=pb.DIRECTION_MAXIMIZE)),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "direction" in details
    code, details = code_of(stub.CreateStudy, pb.CreateStudyRequest(study=study_spec(target=1.0)))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "target" in details


def test_start_run_is_idempotent_and_conflicts_name_the_field(stub):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec()))
    config = struct_pb2.Struct()
    config.update({"lr": 0.001, "layers": 4})
    spec = pb.RunSpec(name="r1", config=config)
    assert stub.StartRun(pb.StartRunRequest(study="sweep", run=spec)).created
    again = stub.StartRun(pb.StartRunRequest(study="sweep", run=spec))
    assert not again.created and again.run.spec.config["layers"] == 4
    other = struct_pb2.Struct()
    other.update({"lr": 0.01, "layers": 4})
    code, details = code_of(
        stub.StartRun, pb.StartRunRequest(study="sweep", run=pb.RunSpec(name="r1", config=other))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "config" in details
    code, details = code_of(
        stub.StartRun,
        pb.StartRunRequest(study="sweep", run=pb.RunSpec(name="r1", config=config, max_step=5)),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "max_step" in details


def test_unknown_study_or_run_is_not_found(stub):
    code, details = code_of(stub.GetStudy, pb.GetStudyRequest(name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, _ = code_of(stub.StartRun, pb.StartRunRequest(study="nope", run=pb.RunSpec(name="r")))
    assert code == grpc.StatusCode.NOT_FOUND
    make_run(stub)
    for call, request in [
        (
            stub.ReportMetrics,
            pb.ReportMetricsRequest(study="sweep", run="ghost", points=points([1])),
        ),
        (stub.GetDecision, pb.GetDecisionRequest(study="sweep", run="ghost")),
        (stub.GetForecast, pb.GetForecastRequest(study="sweep", run="ghost")),
        (
            stub.FinishRun,
            pb.FinishRunRequest(study="sweep", run="ghost", state=pb.RUN_STATE_FINISHED),
        ),
        (stub.ListRuns, pb.ListRunsRequest(study="nope")),
    ]:
        code, details = code_of(call, request)
        assert code == grpc.StatusCode.NOT_FOUND, details


@pytest.mark.parametrize(
    "spec, word",
    [
        (study_spec(direction=pb.DIRECTION_UNSPECIFIED), "direction"),
        (study_spec(name=""), "name"),
        (study_spec(metric=""), "metric"),
        (study_spec(forecaster="crystal_ball"), "crystal_ball"),
        (study_spec(policy=pb.PolicySettings(name="oracle")), "oracle"),
    ],
)
def test_bad_study_definitions_are_invalid_argument(stub, spec, word):
    code, details = code_of(stub.CreateStudy, pb.CreateStudyRequest(study=spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and word in details


def test_bad_policy_settings_name_the_setting(stub):
    params = struct_pb2.Struct()
    params.update({"epsilon": 1.5})
    code, details = code_of(
        stub.CreateStudy,
        pb.CreateStudyRequest(
            study=study_spec(policy=pb.PolicySettings(name="default", params=params))
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "epsilon" in details
    params = struct_pb2.Struct()
    params.update({"patience": 3})
    code, details = code_of(
        stub.CreateStudy,
        pb.CreateStudyRequest(
            study=study_spec(policy=pb.PolicySettings(name="default", params=params))
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "patience" in details
    params = struct_pb2.Struct()
    params.update({"grace_steps": 5000})
    code, details = code_of(
        stub.CreateStudy,
        pb.CreateStudyRequest(
            study=study_spec(policy=pb.PolicySettings(name="default", params=params))
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "grace_steps" in details


def test_report_then_read_back_forecast_and_decision(stub):
    make_run(stub, target=2.5)
    for lo in range(1, 101, 10):
        resp = stub.ReportMetrics(
            pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(lo, lo + 10)))
        )
        assert resp.n_stored == 10 and resp.last_step == lo + 9
    assert resp.decision.action == pb.ACTION_CONTINUE
    run = stored(stub)
    assert run.n_points == 100 and run.last_step == 100
    assert run.best_value == pytest.approx(2.0 + 3.0 * 10**-0.5)
    fc = stub.GetForecast(pb.GetForecastRequest(study="sweep", run="r1", path_points=5))
    true_final = 2.0 + 3.0 * 100**-0.5
    q = fc.forecast.quantiles[0].values
    assert list(fc.forecast.steps) == [1000]
    assert list(q) == sorted(q) and q[0] <= true_final <= q[-1]
    # The true curve reaches 2.3 by step 1000. auto is the learned ensemble here (a budget, no
    # lr), its intervals the conformal tables' (residuals of real runs cut at 10%, which miss
    # by far more than a clean power law does): less sure than a power-law fit, but its median
    # reaches the target and so does more than half of it.
    assert q[2] < 2.5 and fc.forecast.prob_reach_target > 0.5
    assert fc.forecast.model == "ensemble"  # auto, with a budget and no lr: the shipped ensemble
    assert 100 / 1.1 <= fc.forecast.observed_until_step <= 100  # refit every 10% of growth
    assert len(fc.path.steps) == 5 and fc.path.steps[0] == 100 and fc.path.steps[-1] == 1000
    d = stub.GetDecision(pb.GetDecisionRequest(study="sweep", run="r1")).decision
    assert d.action == pb.ACTION_CONTINUE and d.reason == pb.REASON_PROMISING
    assert d.at_step == 100 and "P(reach" in d.explanation
    assert d.probabilities["p_reach_target"] == pytest.approx(fc.forecast.prob_reach_target)
    at = stub.GetForecast(
        pb.GetForecastRequest(
            study="sweep", run="r1", at_steps=[200, 500], quantile_levels=[0.1, 0.9]
        )
    )
    assert list(at.forecast.steps) == [200, 500] and len(at.forecast.quantiles[1].values) == 2


def test_target_unreachable_stops_with_numbers_after_two_votes(stub):
    # The default policy with two votes and no margin: grace 10% of the budget.
    make_run(
        stub,
        target=1.0,
        policy=pb.PolicySettings(name="default", params={"hysteresis": 2, "target_margin": 0}),
    )
    first = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(1, 120, 2)))
    ).decision
    assert first.action == pb.ACTION_CONTINUE and "stop vote 1 of 2" in first.explanation
    again = stub.GetDecision(pb.GetDecisionRequest(study="sweep", run="r1")).decision
    assert again == first  # the same forecast recounts the same vote
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(121, 160, 2)))
    ).decision
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_TARGET_UNREACHABLE
    assert d.probabilities["p_reach_target"] < 0.05 and d.expected_saved_steps == 1000 - 159
    assert "P(reach 1 by step 1000)" in d.explanation and d.policy == "forecast"


def test_a_target_just_out_of_the_forecasts_reach_is_not_called_unreachable(stub):
    # The run heads for ~2.3 at step 1000: 1.8 is improbable (P < 0.05) but misses the
    # optimistic bound by less than the default margin (half the run's observed range).
    make_run(stub, target=1.8, policy=pb.PolicySettings(name="default", params={"hysteresis": 1}))
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(1, 400, 4)))
    ).decision
    assert d.action == pb.ACTION_CONTINUE and "within the margin" in d.explanation
    assert d.probabilities["p_reach_target"] < 0.05
    # Without the margin the same forecast stops the run.
    make_run(
        stub,
        study="no-margin",
        target=1.8,
        policy=pb.PolicySettings(name="default", params={"hysteresis": 1, "target_margin": 0}),
    )
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="no-margin", run="r1", points=points(range(1, 400, 4)))
    ).decision
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_TARGET_UNREACHABLE


def test_converged_waits_for_its_progress_floor_through_the_server(stub):
    # A loss flat from step ~50: the served forecast calls it converged by step 700.
    params = {"delta": 0.01, "hysteresis": 1, "converged_min_fraction": 0.8}
    make_run(stub, policy=pb.PolicySettings(name="default", params=params))
    flat = [2.0 + 2.0 * math.exp(-s / 10.0) for s in range(10, 701, 10)]
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(10, 701, 10), flat))
    ).decision
    assert d.action == pb.ACTION_CONTINUE and "too early to call it converged" in d.explanation
    assert d.probabilities["p_gain"] < 0.05
    more = [2.0 + 2.0 * math.exp(-s / 10.0) for s in range(710, 801, 10)]
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(710, 801, 10), more))
    ).decision
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_CONVERGED


def test_warmup_on_tiny_curves(stub):
    make_run(stub, target=1.0)
    d = stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points([1, 2]))
    ).decision
    assert d.action == pb.ACTION_CONTINUE and d.reason == pb.REASON_WARMUP


def test_a_flat_run_is_stopped_as_not_learning_through_the_server(stub):
    make_run(stub, policy=pb.PolicySettings(name="forecast", params={"flat_fraction": 0.2}))
    flat = [pb.Point(step=s, value=2.3) for s in range(10, 301, 10)]
    d = stub.ReportMetrics(pb.ReportMetricsRequest(study="sweep", run="r1", points=flat)).decision
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_NOT_LEARNING
    assert "not learning" in d.explanation and d.expected_saved_steps == 700


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_stored_as_sent_and_diverge(stub, value):
    make_run(stub)
    pts = points(range(1, 6)) + [pb.Point(step=6, value=value)]
    d = stub.ReportMetrics(pb.ReportMetricsRequest(study="sweep", run="r1", points=pts)).decision
    assert d.action == pb.ACTION_STOP and d.reason == pb.REASON_DIVERGED
    last = stored(stub).last_value
    assert (math.isnan(last) and math.isnan(value)) or last == value
    again = stub.GetDecision(pb.GetDecisionRequest(study="sweep", run="r1")).decision
    assert again.reason == pb.REASON_DIVERGED


def _report(stub, steps, values=None):
    return stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="r1", points=points(steps, values))
    )


@pytest.mark.parametrize(
    "steps, values, word",
    [
        ([3, 2], None, "increase"),
        ([5, 5], None, "increase"),
        ([-1, 2], None, ">= 0"),
        ([], None, "empty"),
    ],
)
def test_bad_batches_are_invalid_and_store_nothing(stub, steps, values, word):
    make_run(stub)
    _report(stub, range(1, 4))
    code, details = code_of(_report, stub, steps, values)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and word in details
    assert stored(stub).n_points == 3


def test_rewriting_a_stored_step_is_rejected_and_the_whole_batch_dropped(stub):
    make_run(stub)
    _report(stub, range(1, 4))
    code, details = code_of(_report, stub, [3, 4, 5], [9.9, 1.0, 1.0])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "already stored" in details
    run = stored(stub)
    assert run.n_points == 3 and run.last_step == 3


def test_identical_retry_stores_nothing_twice(stub):
    make_run(stub)
    first = _report(stub, range(1, 11))
    retry = _report(stub, range(1, 11))
    assert first.n_stored == 10 and retry.n_stored == 0 and retry.last_step == 10
    assert stored(stub).n_points == 10
    overlap = _report(stub, range(6, 16))  # half retried, half new
    assert overlap.n_stored == 5 and stored(stub).n_points == 15


def test_reporting_to_a_finished_run_fails_precondition(stub):
    make_run(stub)
    _report(stub, range(1, 4))
    run = stub.FinishRun(
        pb.FinishRunRequest(study="sweep", run="r1", state=pb.RUN_STATE_FINISHED)
    ).run
    assert run.state == pb.RUN_STATE_FINISHED and run.finished_at_s > 0
    code, details = code_of(_report, stub, [4])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "finished" in details
    code, _ = code_of(
        stub.FinishRun, pb.FinishRunRequest(study="sweep", run="r1", state=pb.RUN_STATE_FAILED)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    listed = stub.ListRuns(pb.ListRunsRequest(study="sweep", state=pb.RUN_STATE_FINISHED)).runs
    assert [r.spec.name for r in listed] == ["r1"]
    assert not stub.ListRuns(pb.ListRunsRequest(study="sweep", state=pb.RUN_STATE_RUNNING)).runs


def test_oversized_batch_is_resource_exhausted_naming_the_limit(stub):
    make_run(stub)
    code, details = code_of(_report, stub, range(1, 102))  # the fixture's limit is 100
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_points_per_batch" in details
    assert stored(stub).n_points == 0


def test_oversized_message_is_resource_exhausted(tmp_path):
    from tests.conftest import start_live_server

    server = start_live_server(tmp_path / "small.db", max_message_bytes=2048)
    try:
        with grpc.insecure_channel(server.address) as channel:
            from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc

            stub = pb_grpc.CurveServiceStub(channel)
            code, details = code_of(
                stub.ReportMetrics,
                pb.ReportMetricsRequest(study="s", run="r", points=points(range(1, 500))),
            )
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2048" in details
    finally:
        server.stop()


def test_stream_sends_a_decision_whenever_it_changes(stub):
    make_run(stub)

    def batches():
        yield pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(1, 4)))
        yield pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(4, 8)))
        yield pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(8, 10)))
        yield pb.ReportMetricsRequest(
            study="sweep", run="r1", points=[pb.Point(step=10, value=math.nan)]
        )

    replies = list(stub.StreamMetrics(batches()))
    reasons = [r.decision.reason for r in replies]
    assert reasons[-1] == pb.REASON_DIVERGED and replies[-1].last_step == 10
    assert len(set(reasons)) == len(reasons)  # only changes are sent
    assert stored(stub).n_points == 10


def test_stream_asked_to_ack_answers_every_batch_once_stored(stub):
    """With the metadata ACK_EVERY_BATCH, each batch gets its answer after it is stored, so a
    trainer can wait for it before sending the next (the benchmark's closed loop does)."""
    make_run(stub)
    requests: queue.SimpleQueue = queue.SimpleQueue()
    replies = stub.StreamMetrics(iter(requests.get, None), metadata=(ACK_EVERY_BATCH,))
    for k in range(4):
        steps = range(10 * k + 1, 10 * k + 11)
        requests.put(pb.ReportMetricsRequest(study="sweep", run="r1", points=points(steps)))
        reply = next(replies)
        assert reply.last_step == 10 * k + 10 and stored(stub).n_points == 10 * k + 10
    requests.put(None)
    assert list(replies) == [] and replies.code() == grpc.StatusCode.OK


def test_stream_error_ends_the_stream_with_a_status(stub):
    make_run(stub)

    def batches():
        yield pb.ReportMetricsRequest(study="sweep", run="r1", points=points(range(1, 4)))
        yield pb.ReportMetricsRequest(study="sweep", run="r1", points=points([2], [9.0]))

    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamMetrics(batches()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(stub).n_points == 3


def test_forecast_curve_is_stateless(stub):
    request = pb.ForecastCurveRequest(
        points=points(range(1, 50)), direction=pb.DIRECTION_MINIMIZE, max_step=500, target=2.2
    )
    fc = stub.ForecastCurve(request).forecast
    assert fc.steps == [500] and 0.0 <= fc.prob_reach_target <= 1.0
    assert not stub.ListStudies(pb.ListStudiesRequest()).studies
    code, details = code_of(
        stub.ForecastCurve,
        pb.ForecastCurveRequest(points=points(range(1, 50)), direction=pb.DIRECTION_MINIMIZE),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at_steps" in details
    code, details = code_of(
        stub.ForecastCurve,
        pb.ForecastCurveRequest(
            points=points(range(1, 50)),
            direction=pb.DIRECTION_MINIMIZE,
            max_step=100,
            quantile_levels=[0.9, 0.1],
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "quantile_levels" in details
    code, details = code_of(
        stub.ForecastCurve,
        pb.ForecastCurveRequest(
            points=points(range(1, 50)), direction=pb.DIRECTION_MINIMIZE, at_steps=[10, 100]
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "[10]" in details and "before the last observed step 49" in details


def test_maximize_study_reads_back_in_its_own_direction(stub):
    make_run(stub, direction=pb.DIRECTION_MAXIMIZE, target=0.9)
    acc = [0.9 - 0.5 * (s / 10.0) ** -0.5 for s in range(1, 120, 2)]
    d = _report(stub, range(1, 120, 2), acc).decision
    assert d.reason in (pb.REASON_PROMISING, pb.REASON_TARGET_UNREACHABLE)
    assert stored(stub).best_value == pytest.approx(max(acc))
    q = stub.GetForecast(pb.GetForecastRequest(study="sweep", run="r1")).forecast
    assert q.quantiles[0].values[2] > max(acc) - 0.01  # still improving, upward


def test_studies_list_and_count_runs(stub):
    make_run(stub, study="a")
    make_run(stub, study="b", run="x")
    stub.StartRun(pb.StartRunRequest(study="b", run=pb.RunSpec(name="y")))
    studies = stub.ListStudies(pb.ListStudiesRequest()).studies
    assert [(s.spec.name, s.n_runs) for s in studies] == [("a", 1), ("b", 2)]


def test_health_and_reflection(live_server):
    with grpc.insecure_channel(live_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "forecaster.v1.CurveService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"forecaster.v1.CurveService", "grpc.health.v1.Health"} <= names


def test_request_id_comes_back_in_trailing_metadata(stub):
    _, call = stub.ListStudies.with_call(
        pb.ListStudiesRequest(), metadata=(("x-request-id", "abc123"),)
    )
    assert ("x-request-id", "abc123") in tuple(call.trailing_metadata())


def test_token_auth(tmp_path):
    from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
    from tests.conftest import start_live_server

    server = start_live_server(tmp_path / "auth.db", auth_token="s3cret")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            code, details = code_of(stub.ListStudies, pb.ListStudiesRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details
            ok = stub.ListStudies(
                pb.ListStudiesRequest(), metadata=(("authorization", "Bearer s3cret"),)
            )
            assert list(ok.studies) == []
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        server.stop()


def test_a_planned_schedule_makes_auto_use_the_annealing_law(stub):
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("llm", max_step=2000)))
    wsd = pb.LrSchedule(
        kind=pb.SCHEDULE_KIND_WSD, peak_lr=3e-4, warmup_steps=100, total_steps=2000,
        decay_fraction=0.2, decay_shape="linear",
    )  # fmt: skip
    short = pb.LrSchedule(kind=pb.SCHEDULE_KIND_COSINE, peak_lr=3e-4, total_steps=1500)
    code, details = code_of(
        stub.StartRun, pb.StartRunRequest(study="llm", run=pb.RunSpec(name="r", lr_schedule=short))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1501..2000" in details
    stub.StartRun(pb.StartRunRequest(study="llm", run=pb.RunSpec(name="r", lr_schedule=wsd)))
    steps = list(range(100, 801, 20))
    values = [2.0 + 1.5 * (s / 100) ** -0.5 for s in steps]
    stub.ReportMetrics(pb.ReportMetricsRequest(study="llm", run="r", points=points(steps, values)))
    fc = stub.GetForecast(pb.GetForecastRequest(study="llm", run="r")).forecast
    assert fc.model == "multi_power_law" and fc.steps == [2000]
    assert "fitted on this run alone" in " ".join(fc.notes)  # no completed run in the study yet
    assert fc.quantiles[0].values[2] < values[-1]  # the decay still to come lowers the loss
    # A new plan with a report: one that ends before the budget is refused, naming the range.
    code, details = code_of(
        stub.ReportMetrics,
        pb.ReportMetricsRequest(
            study="llm", run="r", points=points([801], [2.5]), lr_schedule=short
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1501..2000" in details
    assert stored(stub, "llm", "r").last_step == 800  # nothing stored


def test_a_forecast_too_wide_to_decide_is_uncertain_through_the_server(stub):
    """A finished run sets the incumbent at 2.35; a flat run that wanders around 2.6 gets a
    forecast whose 90% interval spans it on both sides by more than uncertain_width times the
    run's observed range: UNCERTAIN, which continues."""
    import numpy as np

    policy = pb.PolicySettings(name="forecast", params={"uncertain_width": 0.1})
    make_run(stub, run="done", policy=policy)
    steps = list(range(10, 1001, 10))
    finished = [2.35 + 3.0 * (s / 10.0) ** -0.5 - 3.0 * (100.0) ** -0.5 for s in steps]
    stub.ReportMetrics(
        pb.ReportMetricsRequest(study="sweep", run="done", points=points(steps, finished))
    )
    stub.FinishRun(pb.FinishRunRequest(study="sweep", run="done", state=pb.RUN_STATE_FINISHED))
    stub.StartRun(pb.StartRunRequest(study="sweep", run=pb.RunSpec(name="r1")))
    wander = 2.6 + np.random.default_rng(0).normal(0, 0.1, 20)
    flat = points(list(range(10, 201, 10)), [float(v) for v in wander])
    d = stub.ReportMetrics(pb.ReportMetricsRequest(study="sweep", run="r1", points=flat)).decision
    assert d.action == pb.ACTION_CONTINUE and d.reason == pb.REASON_UNCERTAIN, d.explanation
    assert "spans the incumbent 2.35" in d.explanation and "too wide to decide" in d.explanation
    assert 0.05 < d.probabilities["p_beat_incumbent"] < 0.95, d
    again = stub.GetDecision(pb.GetDecisionRequest(study="sweep", run="r1")).decision
    assert again.reason == pb.REASON_UNCERTAIN and again.explanation == d.explanation
