"""Metric kinds and noisy curves through the real server (issue 16): a study says its metric's
kind and bounds, they round-trip, and bound every forecast; the noisy lr=20 run of a Keras
user is forecast above zero and stopped as unpromising."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from tests.conftest import study_spec


def lr20_run(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """A digits MLP at lr=20 as the Keras callback logged it: validation cross-entropy from
    25.5 down to 2.39 in 240 steps, noisy and spiky."""
    rng = np.random.default_rng(7)
    steps = np.arange(1, n + 1)
    level = 2.25 + 23.25 * np.exp(-(steps - 1) / 12.0)
    spikes = np.where(rng.random(n) < 0.08, rng.exponential(2.5, n), 0.0)
    values = np.maximum(level + rng.standard_normal(n) * 0.35 + spikes, 0.05)
    values[0], values[-1] = 25.5, 2.39
    return steps, values


def report(stub, run: str, steps, values, lr: float, study: str = "digits") -> pb.Decision:
    pts = [pb.Point(step=int(s), value=float(v), lr=lr) for s, v in zip(steps, values, strict=True)]
    return stub.ReportMetrics(pb.ReportMetricsRequest(study=study, run=run, points=pts)).decision


def test_the_lr20_run_is_forecast_above_zero_and_stopped_as_unpromising(stub):
    spec = study_spec("digits", metric="val_loss", max_step=240)
    stub.CreateStudy(pb.CreateStudyRequest(study=spec))
    stub.StartRun(pb.StartRunRequest(study="digits", run=pb.RunSpec(name="lr0.1")))
    steps = np.arange(1, 241)
    good = 0.367 + 1.9 * steps**-0.6
    good[-1] = 0.367
    for start in range(0, 240, 80):
        report(stub, "lr0.1", steps[start : start + 80], good[start : start + 80], lr=0.1)
    stub.FinishRun(pb.FinishRunRequest(study="digits", run="lr0.1", state=pb.RUN_STATE_FINISHED))

    stub.StartRun(pb.StartRunRequest(study="digits", run=pb.RunSpec(name="lr20")))
    steps, values = lr20_run()
    p_beat: list[float] = []
    actions = []
    for start in range(0, 228, 12):
        d = report(stub, "lr20", steps[start : start + 12], values[start : start + 12], lr=20.0)
        actions.append((d.action, d.reason))
        fc = stub.GetForecast(pb.GetForecastRequest(study="digits", run="lr20")).forecast
        q = np.array(fc.quantiles[0].values)
        assert q[0] >= 0.0, (start, list(q), list(fc.notes))  # a cross-entropy is >= 0
        assert 0.5 < q[2] < 10.0, (start, list(q), list(fc.notes), fc.model)  # a sensible centre
        if "p_beat_incumbent" in d.probabilities:
            p_beat.append(d.probabilities["p_beat_incumbent"])
    # auto answers for a run whose lr is known; the notes say which model answered.
    assert fc.model == "multi_power_law" and fc.notes
    assert p_beat and p_beat[-1] < 0.05  # the forecast policy's stop threshold (epsilon)
    assert (pb.ACTION_STOP, pb.REASON_UNPROMISING) in actions


def test_a_study_says_its_metric_kind_and_bounds_and_they_round_trip(stub):
    spec = study_spec("scores", metric="score", direction=pb.DIRECTION_MAXIMIZE,
                      metric_kind="probability", metric_upper=0.9)  # fmt: skip
    created = stub.CreateStudy(pb.CreateStudyRequest(study=spec)).study.spec
    assert created.metric_kind == "probability" and created.metric_upper == 0.9
    assert not created.HasField("metric_lower")
    again = stub.GetStudy(pb.GetStudyRequest(name="scores")).study.spec
    assert again == created
    # Another kind is another study definition: refused, naming the field.
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(
            "scores", metric="score", direction=pb.DIRECTION_MAXIMIZE, metric_kind="accuracy",
            metric_upper=0.9)))  # fmt: skip
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "metric_kind" in err.value.details()
    # The bounds bound the forecast: a rising score is not forecast past 0.9.
    stub.StartRun(pb.StartRunRequest(study="scores", run=pb.RunSpec(name="r")))
    steps = np.arange(1, 101) * 10
    stub.ReportMetrics(pb.ReportMetricsRequest(study="scores", run="r", points=[
        pb.Point(step=int(s), value=float(0.95 - 0.8 * (s / 10) ** -0.4)) for s in steps[:30]
    ]))  # fmt: skip
    fc = stub.GetForecast(pb.GetForecastRequest(study="scores", run="r", at_steps=[1000]))
    assert max(fc.forecast.quantiles[0].values) <= 0.9


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"metric_kind": "ratio"}, "unknown metric_kind 'ratio'; use one of loss, accuracy"),
        ({"metric_lower": 1.0, "metric_upper": 0.5}, "metric_lower must be below metric_upper"),
        ({"metric_lower": float("nan")}, "metric bounds must be finite"),
    ],
)
def test_a_bad_metric_kind_or_bounds_is_refused_saying_what_to_send(stub, fields, words):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("bad", **fields)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()
