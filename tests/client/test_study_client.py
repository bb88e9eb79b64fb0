"""StudyClient (and its asyncio twin) and the Reporter's forecast, summary and manual stop,
against the real service on a loopback port."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from forecaster_client import AsyncStudyClient, Reporter, StudyClient
from tests.conftest import start_live_server


def curve(step: int, scale: float = 1.0) -> float:
    return 2.0 + scale * 3.0 * (max(step, 1) / 10.0) ** -0.5


@pytest.fixture
def manual_service(tmp_path: Path) -> Iterator[str]:
    """A service that allows manual stops."""
    server = start_live_server(tmp_path / "s.db", allow_manual_stop=True)
    yield server.address
    server.stop()


def report_run(address: str, study: str, run: str, steps: range, scale: float = 1.0, **kw):
    reporter = Reporter(address, study, run, max_step=1000, target=2.2, flush_interval_s=0.02, **kw)
    for s in steps:
        reporter.report(s, curve(s, scale))
    assert reporter.flush(20)
    return reporter


def test_the_client_returns_values_of_what_the_service_holds(manual_service):
    done = report_run(manual_service, "sweep", "done", range(10, 1001, 10))
    done.close(state="finished")
    live = report_run(manual_service, "sweep", "live", range(10, 401, 10), scale=1.2)
    nan = report_run(manual_service, "sweep", "nan", range(10, 201, 10), scale=1.5)
    nan.report(210, math.nan)
    assert nan.flush(20)
    nan.close()
    with StudyClient(manual_service) as client:
        (study,) = client.studies()
        assert (study.name, study.metric, study.direction, study.max_step, study.target) == (
            "sweep", "loss", "minimize", 1000, 2.2,
        )  # fmt: skip
        assert study.n_runs == 3
        runs = {r.name: r for r in client.runs("sweep")}
        assert {n: r.state for n, r in runs.items()} == {
            "done": "finished", "live": "running", "nan": "stopped",
        }  # fmt: skip
        assert runs["nan"].decision is not None and runs["nan"].decision.reason == "diverged"
        assert runs["nan"].saved_steps == 1000 - 210
        assert runs["done"].forecast is None and runs["done"].saved_steps == 0
        fc_live = runs["live"].forecast
        assert fc_live is not None and fc_live.steps.tolist() == [1000]
        assert runs["live"].incumbent == pytest.approx(curve(1000))
        assert runs["live"].prob_beat_incumbent is not None
        assert 0.0 <= runs["live"].prob_beat_incumbent <= 1.0
        assert runs["live"].last_step == 400 and runs["live"].n_points == 40

        fc = client.forecast("sweep", "live", at_steps=[500, 1000])
        assert fc.steps.tolist() == [500, 1000] and fc.steps.dtype == np.int64
        assert fc.quantiles.shape == (2, len(fc.quantile_levels))
        assert np.all(np.diff(fc.quantiles, axis=1) >= 0)  # quantiles ascending
        assert np.all(fc.quantile(0.05) <= fc.median) and np.all(fc.median <= fc.quantile(0.95))
        assert fc.mean.shape == (2,) and fc.prob_reach_target is not None
        assert 0 < fc.observed_until_step <= 400 and fc.model  # fitted on a prefix
        with pytest.raises(ValueError, match="quantile_levels"):
            fc.quantile(0.3)
        assert client.forecast("sweep", "live", quantile_levels=[0.3]).quantile(0.3).shape == (1,)

        assert client.decision("sweep", "live").action == "continue"
        history = client.history("sweep", "nan")
        assert history[-1].decision.reason == "diverged" and history[-1].at_step == 210
        assert [h.decided_at_s for h in history] == sorted(h.decided_at_s for h in history)
        points = client.points("sweep", "live")
        assert points.steps.tolist() == list(range(10, 401, 10))
        assert points.values[0] == pytest.approx(curve(10, 1.2))
        with pytest.raises(grpc.RpcError) as info:
            client.forecast("sweep", "ghost")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    live.close()


def test_the_asyncio_twin_reads_the_same(manual_service):
    report_run(manual_service, "a", "r", range(10, 301, 10)).close(state=None)

    async def read():
        async with AsyncStudyClient(manual_service) as client:
            studies = await client.studies()
            runs = await client.runs("a")
            fc = await client.forecast("a", "r", at_steps=[900])
            history = await client.history("a", "r")
            stopped = await client.stop("a", "r", "from asyncio")
            return studies, runs, fc, history, stopped

    studies, runs, fc, history, stopped = asyncio.run(read())
    assert [s.name for s in studies] == ["a"] and [r.name for r in runs] == ["r"]
    assert fc.steps.tolist() == [900] and fc.median.shape == (1,)
    assert history and history[0].decision.reason in ("warmup", "promising")
    assert (stopped.action, stopped.reason) == ("stop", "manual")
    assert "from asyncio" in stopped.explanation


def test_stop_run_makes_should_stop_say_manual_and_the_run_end_stopped(manual_service):
    reporter = report_run(manual_service, "m", "r", range(10, 201, 10))
    assert not reporter.should_stop()
    with StudyClient(manual_service) as client:
        decision = client.stop("m", "r", "alice: loss spike on node 3")
        assert (decision.action, decision.reason) == ("stop", "manual")
        assert client.stop("m", "r").reason == "manual"  # idempotent
        deadline = time.monotonic() + 20
        step = 210
        while not reporter.should_stop() and time.monotonic() < deadline:
            reporter.report(step, curve(step))  # the next report brings the decision back
            step += 10
            time.sleep(0.02)
        assert reporter.should_stop()
        assert reporter.decision.reason == "manual"
        assert "alice: loss spike on node 3" in reporter.decision.explanation
        reporter.close()  # "auto": a run the service cut short ends stopped
        run = client.run("m", "r")
        assert run.state == "stopped" and run.saved_steps == 1000 - run.last_step
        reasons = [h.decision.reason for h in client.history("m", "r")]
        assert reasons[-1] == "manual"


def test_manual_stops_are_refused_unless_the_service_allows_them(live_server):
    report_run(live_server.address, "m", "r", range(10, 101, 10)).close(state=None)
    with StudyClient(live_server.address) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.stop("m", "r")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--allow-manual-stop" in info.value.details()
        assert client.decision("m", "r").reason != "manual"


def test_reporter_forecast_and_its_one_line_summary(manual_service):
    done = report_run(manual_service, "p", "best", range(10, 1001, 10))
    done.close(state="finished")
    reporter = report_run(manual_service, "p", "r", range(10, 301, 10), forecast_every_s=0.0)
    forecast = reporter.forecast(wait_s=10)
    assert forecast is not None
    assert forecast.at_step == 1000 and 0 < forecast.observed_until_step <= 300
    assert forecast.low <= forecast.median <= forecast.high
    assert forecast.incumbent == pytest.approx(curve(1000))
    assert forecast.prob_beat_incumbent is not None
    line = reporter.summary()
    assert line.startswith(f"final loss {forecast.median:.3g} [{forecast.low:.3g}, ")
    assert "at step 1k" in line and f"P(beat {forecast.incumbent:.3g}) = " in line
    metrics = forecast.metrics()
    assert metrics["forecast/final_median"] == forecast.median
    assert metrics["forecast/stop"] in (0.0, 1.0)
    reporter.close()


def test_summary_before_any_forecast_says_so(manual_service):
    reporter = Reporter(manual_service, "q", "r", max_step=100, flush_interval_s=0.02)
    assert reporter.summary() == "final loss: no forecast yet; continue (unknown)"
    reporter.close(state=None)
