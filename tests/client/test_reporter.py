"""The Reporter against the real service: delivery, decisions, re-attaching, failing open."""

from __future__ import annotations

import logging
import math

import grpc
import pytest
import torch

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster_client import Decision, Reporter
from forecaster_client.sync import FailOpenStudy
from tests.client.conftest import Service, free_port
from tests.conftest import start_live_server


def curve(step: int) -> float:
    return 2.0 + 3.0 * (step / 10.0) ** -0.5


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
def test_points_arrive_in_order_with_lr_and_the_decision_comes_back(service, stream):
    with Reporter(
        service.address,
        "sweep",
        "a",
        max_step=1000,
        config={"lr": 0.1, "layers": 4},
        lr_schedule={"kind": "cosine", "peak_lr": 0.1, "total_steps": 1000},
        batch_size=37,
        stream=stream,
    ) as reporter:
        assert reporter.decision == Decision()  # no answer yet: continue, reason unknown
        for step in range(1, 201):
            reporter.report(step, curve(step), lr=0.1)
        assert reporter.flush(10)
        assert reporter.decision.action == "continue"
        assert reporter.decision.at_step == 200
        reporter.report(201, math.nan, lr=0.1)  # divergence is reported, not swallowed
        assert reporter.flush(10)
        assert reporter.should_stop()
        assert reporter.decision.reason == "diverged"
        assert "nan" in reporter.decision.explanation
    stored = service.points("sweep", "a")
    assert stored.steps.tolist() == list(range(1, 202))
    assert stored.values[:200].tolist() == pytest.approx([curve(s) for s in range(1, 201)])
    assert math.isnan(stored.values[200])
    assert stored.lr.tolist() == [0.1] * 201
    run = service.run("sweep", "a")
    assert run.state == pb.RUN_STATE_STOPPED  # closed after a STOP: "auto" says stopped
    assert run.spec.lr_schedule.kind == pb.SCHEDULE_KIND_COSINE
    assert dict(run.spec.config) == {"lr": 0.1, "layers": 4.0}
    study = service.study("sweep")
    assert study.spec.metric == "loss" and study.spec.direction == pb.DIRECTION_MINIMIZE


def test_a_restarted_job_reattaches_and_skips_what_the_run_already_has(service, caplog):
    first = Reporter(service.address, "sweep", "resumed", max_step=500)
    for step in range(1, 101):
        first.report(step, curve(step))
    first.close(state=None)  # pre-empted: the run stays open
    assert service.run("sweep", "resumed").state == pb.RUN_STATE_RUNNING

    # The job restarts from a checkpoint at step 80 and reports 80..150 again.
    with (
        caplog.at_level(logging.WARNING, "forecaster_client"),
        Reporter(service.address, "sweep", "resumed", max_step=500) as second,
    ):
        for step in range(80, 151):
            second.report(step, curve(step) + 1.0)
        assert second.flush(10)
    stored = service.points("sweep", "resumed")
    assert stored.steps.tolist() == list(range(1, 151))
    assert stored.values[99] == pytest.approx(curve(100))  # the first job's value is kept
    assert stored.values[100] == pytest.approx(curve(101) + 1.0)
    skipped = [r for r in caplog.records if "skipped step" in r.getMessage()]
    assert len(skipped) == 1 and "already has step 100" in skipped[0].getMessage()
    assert service.run("sweep", "resumed").state == pb.RUN_STATE_FINISHED


def test_an_exception_leaves_the_run_open_for_the_job_to_resume(service):
    with pytest.raises(RuntimeError), Reporter(service.address, "sweep", "crashed") as r:
        r.report(1, 1.0)
        raise RuntimeError("out of memory")
    run = service.run("sweep", "crashed")
    assert run.state == pb.RUN_STATE_RUNNING and run.n_points == 1


def test_tensors_are_read_off_the_training_thread(service):
    weight = torch.ones(3, requires_grad=True)
    with Reporter(service.address, "sweep", "tensor") as reporter:
        loss = (weight * 2.0).sum()
        reporter.report(torch.tensor(5), loss, lr=torch.tensor(0.01))
        assert reporter.flush(10)
    stored = service.points("sweep", "tensor")
    assert stored.steps.tolist() == [5]
    assert stored.values.tolist() == [6.0] and stored.lr.tolist() == [pytest.approx(0.01)]


def test_a_rate_the_service_would_refuse_is_dropped_not_the_point(service):
    with Reporter(service.address, "sweep", "bad-lr") as reporter:
        reporter.report(1, 1.0, lr=-0.1)
        reporter.report(2, 0.9, lr=math.inf)
        reporter.report(3, 0.8, lr=0.1)
        assert reporter.flush(10)
    stored = service.points("sweep", "bad-lr")
    assert stored.steps.tolist() == [1, 2, 3]
    assert math.isnan(stored.lr[0]) and math.isnan(stored.lr[1]) and stored.lr[2] == 0.1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
def test_a_refused_schedule_costs_a_warning_not_the_points(service, caplog, stream):
    with (
        caplog.at_level(logging.WARNING, "forecaster_client"),
        Reporter(service.address, "sweep", "short-plan", max_step=1000, stream=stream) as r,
    ):
        r.report(1, 1.0)
        assert r.flush(10)
        # The plan ends at step 10, before the budget of 1000: the service refuses it.
        r.set_lr_schedule({"kind": "cosine", "peak_lr": 0.1, "total_steps": 10})
        r.report(2, 0.9)
        r.report(3, 0.8)
        assert r.flush(10)
    assert service.points("sweep", "short-plan").steps.tolist() == [1, 2, 3]
    assert not service.run("sweep", "short-plan").spec.HasField("lr_schedule")
    refused = [m for m in caplog.messages if "refused the planned lr schedule" in m]
    assert len(refused) == 1 and "ends at step 10" in refused[0]


def test_the_schedule_survives_a_first_batch_over_the_service_limit(service):
    # The live service takes 100 points per batch: the first batch of 300 is refused as too
    # large and halved; the plan that rode with it must go with the retry.
    plan = {"kind": "cosine", "peak_lr": 0.1, "total_steps": 1000}
    with Reporter(
        service.address, "sweep", "big-first", max_step=1000, flush_interval_s=60, stream=False
    ) as r:
        r.set_lr_schedule(plan)
        for step in range(1, 301):
            r.report(step, curve(step), lr=0.1)
        assert r.flush(10)
    assert service.points("sweep", "big-first").steps.tolist() == list(range(1, 301))
    schedule = service.run("sweep", "big-first").spec.lr_schedule
    assert schedule.kind == pb.SCHEDULE_KIND_COSINE and schedule.total_steps == 1000


def test_a_callable_schedule_is_read_on_the_background_thread(service):
    plan = {"kind": "linear", "peak_lr": 0.5, "warmup_steps": 10, "total_steps": 2000}
    with Reporter(
        service.address, "sweep", "lazy-plan", max_step=2000, lr_schedule=lambda: plan
    ) as r:
        r.report(1, 1.0)
        assert r.flush(10)
    schedule = service.run("sweep", "lazy-plan").spec.lr_schedule
    assert schedule.kind == pb.SCHEDULE_KIND_LINEAR and schedule.peak_lr == 0.5


def test_an_existing_study_is_joined_as_it_is_when_only_its_budget_differs(service, caplog):
    Reporter(service.address, "shared", "a", max_step=500).close()
    with (
        caplog.at_level(logging.WARNING, "forecaster_client"),
        Reporter(service.address, "shared", "b", max_step=900) as r,
    ):
        r.report(1, 0.5)
        assert r.flush(10)
    assert service.study("shared").spec.max_step == 500
    assert service.points("shared", "b").steps.tolist() == [1]
    assert any("already exists with another definition" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("ours", "named"),
    [
        ({"metric": "loss", "direction": "maximize"}, "metric"),
        ({"metric": "acc", "direction": "minimize"}, "direction"),
    ],
)
def test_a_study_of_another_metric_or_direction_is_refused_and_training_goes_on(
    service, caplog, ours, named
):
    Reporter(service.address, "shared", "a", metric="acc", direction="maximize").close()
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        r = Reporter(service.address, "shared", "b", flush_interval_s=0.05, **ours)
        for step in range(1, 20):
            r.report(step, 0.5)  # never raises, never blocks: training goes on
        assert not r.flush(10)  # nothing can be stored in the wrong study
        assert not r.should_stop()
        r.close()
    assert [run.spec.name for run in service.runs("shared")] == ["a"]
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"exists with another {named}" in errors[0].getMessage()
    if named == "direction":
        assert "stored maximize, this run minimize" in errors[0].getMessage()


def test_the_sync_client_of_a_pruner_refuses_a_study_of_another_direction(service, caplog):
    Reporter(service.address, "shared", "a", metric="acc", direction="maximize").close()
    spec = pb.StudySpec(name="shared", metric="acc", direction=pb.DIRECTION_MINIMIZE, max_step=10)
    client = FailOpenStudy(service.address, spec)
    with caplog.at_level(logging.ERROR, "forecaster_client"):
        assert client.report("trial-0", [(1, 0.5, None)]) is None
        assert client.report("trial-1", [(1, 0.5, None)]) is None
    client.close()
    assert client.refused and "direction" in client.refused
    assert [run.spec.name for run in service.runs("shared")] == ["a"]
    assert sum(rec.levelno == logging.ERROR for rec in caplog.records) == 1


def test_service_down_training_goes_on_one_warning_then_delivery_when_it_is_up(tmp_path, caplog):
    """The service is down when the job starts; the queue (10 points) keeps the newest."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        reporter = Reporter(address, "late", "r", queue_size=10, flush_interval_s=0.05)
        for step in range(25):
            reporter.report(step, curve(step + 1))
        assert not reporter.should_stop()
        assert reporter.dropped == 15
        assert not reporter.flush(1.0)  # nothing can be stored yet
        server = start_live_server(tmp_path / "late.db", port=port)
        try:
            assert reporter.flush(30)
            service = Service(server)
            assert service.points("late", "r").steps.tolist() == list(range(15, 25))
            reporter.close()
            assert service.run("late", "r").state == pb.RUN_STATE_FINISHED
        finally:
            server.stop()
    unreachable = [m for m in caplog.messages if "cannot reach the service" in m]
    assert len(unreachable) == 1 and address in unreachable[0]
    assert sum("oldest points are being dropped" in m for m in caplog.messages) == 1


def test_close_with_the_service_down_returns_within_its_timeout(caplog):
    reporter = Reporter(f"127.0.0.1:{free_port()}", "s", "r", flush_interval_s=0.05)
    for step in range(100):
        reporter.report(step, 1.0)
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        reporter.close(timeout_s=0.5)
    assert any("could not send the last 100 points" in m for m in caplog.messages)


def test_a_wrong_token_is_one_warning_naming_the_address(tmp_path, caplog):
    server = start_live_server(tmp_path / "auth.db", auth_token="s3cret")
    try:
        with caplog.at_level(logging.WARNING, "forecaster_client"):
            wrong = Reporter(server.address, "s", "r", token="guess", flush_interval_s=0.05)
            for step in range(1, 50):
                wrong.report(step, 1.0)
            assert not wrong.flush(1.0)
            assert not wrong.should_stop()
            wrong.close(timeout_s=0.5)
        auth = [m for m in caplog.messages if "refused the token" in m]
        assert len(auth) == 1 and server.address in auth[0] and "UNAUTHENTICATED" in auth[0]

        with Reporter(server.address, "s", "r", token="s3cret") as right:
            right.report(1, 1.0)
            assert right.flush(10)
        assert server.running.engine.store.get_points("s", "r").steps.tolist() == [1]
    finally:
        server.stop()


def test_a_finished_run_refuses_and_training_goes_on(service, caplog):
    Reporter(service.address, "sweep", "done").close(state="finished")
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        reporter = Reporter(service.address, "sweep", "done", flush_interval_s=0.05)
        reporter.report(1, 1.0)
        assert not reporter.flush(5)
        reporter.report(2, 1.0)  # a no-op now, and cheap
        reporter.close(timeout_s=1)
    refused = [m for m in caplog.messages if "refuses run 'done'" in m]
    assert len(refused) == 1 and "finished" in refused[0]
    assert service.run("sweep", "done").n_points == 0


def test_bad_arguments_are_the_callers_bug_and_raise_at_once():
    with pytest.raises(ValueError, match="direction must be 'minimize' or 'maximize'"):
        Reporter("127.0.0.1:1", "s", "r", direction="down")
    with pytest.raises(ValueError, match="lr_schedule kind must be one of"):
        Reporter("127.0.0.1:1", "s", "r", lr_schedule={"kind": "exponential"})
    with pytest.raises(ValueError, match="run must be a non-empty name"):
        Reporter("127.0.0.1:1", "s", "")
    with pytest.raises(ValueError, match="distributed=True but torch.distributed"):
        Reporter("127.0.0.1:1", "s", "r", distributed=True)


def test_tls_to_a_plaintext_service_fails_open_with_one_warning(service, caplog):
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        reporter = Reporter(service.address, "sweep", "tls", tls=True, flush_interval_s=0.05)
        reporter.report(1, 1.0)
        assert not reporter.flush(1.0)
        assert not reporter.should_stop()
        reporter.close(timeout_s=0.5)
    unreachable = [m for m in caplog.messages if "cannot reach the service" in m]
    assert len(unreachable) == 1 and service.address in unreachable[0]
    with pytest.raises(grpc.RpcError, match="no study named 'sweep'"):
        service.study("sweep")  # nothing got through


def test_a_flat_run_hears_not_learning_and_stops(service):
    with Reporter(
        service.address,
        "flat-sweep",
        "lr0",
        max_step=1000,
        policy="forecast",
        policy_params={"flat_fraction": 0.2},
    ) as r:
        for step in range(10, 301, 10):
            r.report(step, 2.3)
        assert r.flush(10)
        assert r.should_stop() and r.decision.reason == "not_learning"
    assert service.run("flat-sweep", "lr0").state == pb.RUN_STATE_STOPPED


def test_a_run_whose_forecast_is_too_wide_hears_uncertain_and_goes_on(service):
    """A finished run sets the incumbent; a flat run wandering around it gets UNCERTAIN, a
    continue whose name the Reporter reads (and that rank 0 broadcasts as a wire code)."""
    import numpy as np

    wide = {"policy": "forecast", "policy_params": {"uncertain_width": 0.25}}
    with Reporter(service.address, "wide-sweep", "done", max_step=1000, **wide) as r:
        for step in range(10, 1001, 10):
            r.report(step, 2.6 + 3.0 * (step / 10.0) ** -0.5 - 0.3)
        assert r.flush(10)
    wander = 2.6 + np.random.default_rng(0).normal(0, 0.1, 20)
    with Reporter(service.address, "wide-sweep", "lr1", max_step=1000, **wide) as r:
        for step, value in zip(range(10, 201, 10), wander, strict=True):
            r.report(step, float(value))
        assert r.flush(10)
        assert not r.should_stop() and r.decision.reason == "uncertain", r.decision.explanation
        assert "too wide to decide" in r.decision.explanation
        assert Decision.from_codes(*r.decision.codes()).reason == "uncertain"
