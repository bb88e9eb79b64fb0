"""The Keras 3 callback (torch backend) with a tiny model on CPU against the real service."""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest

from forecaster.server._proto import forecaster_pb2 as pb

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported
keras = pytest.importorskip("keras", reason="needs the keras extra of trainer_plugins")
if keras.backend.backend() != "torch":
    pytest.skip("Keras was imported with another backend", allow_module_level=True)
from forecaster_client.keras import ForecastCallback  # noqa: E402

# Importing the framework alone takes seconds (see SLOW_TO_IMPORT in conftest.py).
pytestmark = pytest.mark.slow

EPOCHS, STEPS = 400, 1  # full batches of 64 samples: a smooth curve


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")


class NanAfter(keras.callbacks.Callback):
    """Makes the logged loss NaN from a batch on (a divergence), ahead of our callback."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.step:
            logs["loss"] = math.nan


def model(lr) -> keras.Model:
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return m


def test_stops_training_and_reports_lr_budget_and_planned_schedule(service):
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=EPOCHS * STEPS)
    callback = ForecastCallback(service.address, "keras", "tiny", flush_interval_s=0.02)
    m = model(schedule)
    x, y = data()
    history = m.fit(
        x, y, batch_size=64, epochs=EPOCHS, verbose=0, callbacks=[NanAfter(30), callback]
    )
    assert len(history.epoch) < EPOCHS  # the service said stop
    assert callback.reporter.decision.reason == "diverged"
    run = service.run("keras", "tiny")
    assert run.state == pb.RUN_STATE_STOPPED and run.spec.max_step == EPOCHS * STEPS
    plan = run.spec.lr_schedule
    assert plan.kind == pb.SCHEDULE_KIND_EXPLICIT and plan.steps[-1] == EPOCHS * STEPS
    assert plan.values[0] == pytest.approx(0.05) and plan.values[-1] == pytest.approx(0, abs=1e-6)

    points = service.points("keras", "tiny")
    assert points.steps[0] == 1 and np.all(np.diff(points.steps) == 1)
    expected = 0.05 * 0.5 * (1 + np.cos(np.pi * points.steps / (EPOCHS * STEPS)))
    assert points.lr == pytest.approx(expected, rel=1e-4)  # the optimizer's current rate
    assert math.isnan(points.values[-1])


def test_a_validation_metric_is_reported_per_epoch(service):
    callback = ForecastCallback(service.address, "keras", "val", monitor="val_loss")
    x, y = data()
    model(0.01).fit(
        x, y, batch_size=8, epochs=3, validation_split=0.25, verbose=0, callbacks=[callback]
    )
    points = service.points("keras", "val")
    assert points.steps.tolist() == [6, 12, 18]  # 48 training samples: 6 batches an epoch
    assert np.all(points.lr == pytest.approx(0.01))
    assert service.run("keras", "val").state == pb.RUN_STATE_FINISHED


def test_a_metric_missing_from_the_logs_is_one_warning_with_the_names_found(service, caplog):
    callback = ForecastCallback(service.address, "keras", "typo", monitor="acc")
    x, y = data()
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        model(0.01).fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    missing = [m for m in caplog.messages if "no metric 'acc'" in m]
    assert len(missing) == 1 and "found: loss" in missing[0]


def test_the_forecast_is_in_the_logs_keras_keeps(service):
    """Keras's History (and any callback after ours: TensorBoard, the progress bar) gets the
    forecast with the epoch's logs; log_forecast=False keeps them out."""
    x, y = data()
    callback = ForecastCallback(
        service.address, "keras-log", "tiny", flush_interval_s=0.02, forecast_every_s=0.0
    )
    history = model(0.05).fit(x, y, batch_size=64, epochs=120, verbose=0, callbacks=[callback])
    medians = [v for v in history.history.get("forecast/final_median", []) if v is not None]
    assert medians and all(math.isfinite(v) for v in medians), sorted(history.history)
    lows = history.history["forecast/final_q05"]
    assert lows[-1] <= medians[-1] <= history.history["forecast/final_q95"][-1]
    quiet = ForecastCallback(
        service.address, "keras-log", "quiet", flush_interval_s=0.02, log_forecast=False
    )
    history = model(0.05).fit(x, y, batch_size=64, epochs=60, verbose=0, callbacks=[quiet])
    assert not any(k.startswith("forecast/") for k in history.history)
