"""Keras 3: a Callback that reports a logged metric and sets model.stop_training.

    os.environ["KERAS_BACKEND"] = "torch"   # before keras is imported
    model.fit(x, y, epochs=20, callbacks=[
        ForecastCallback("127.0.0.1:50051", study="sweep", run="lr=1e-3", monitor="loss"),
    ])

Steps are optimizer steps (batches). The budget (epochs x steps per epoch), the optimizer's
current learning rate and, when the optimizer's learning rate is a LearningRateSchedule, the
planned schedule are reported without further setup.
"""

from __future__ import annotations

from typing import Any

from forecaster_client._integration import MetricLookup, require
from forecaster_client.reporter import Reporter
from forecaster_client.schedules import callable_plan

# Keras ships no type information (no stubs, no py.typed): what it gives is Any.
keras: Any = require("keras", "keras")


class ForecastCallback(keras.callbacks.Callback):
    """Reports ``monitor`` from the logs Keras passes; stops training when the service says so.

    Args:
        address, study, run: where to report (see Reporter).
        monitor: a key of Keras's logs ("loss", "val_loss", "accuracy"...).
        on: "batch" reports after each batch, "epoch" after each epoch; default: "epoch" for
            names starting with "val_", else "batch".
        log_forecast: add the service's forecast of the final metric (forecast/final_median,
            forecast/final_q05, forecast/final_q95, forecast/p_beat_incumbent) and the decision
            (forecast/stop) to the logs Keras hands the callbacks after this one (the
            TensorBoard callback, the progress bar): list this callback first. False: off.
        **reporter_options: passed to Reporter; max_step defaults to epochs x steps.
    """

    def __init__(
        self,
        address: str,
        study: str,
        run: str,
        *,
        monitor: str = "loss",
        on: str | None = None,
        log_forecast: bool = True,
        **reporter_options: Any,
    ) -> None:
        super().__init__()
        self.log_forecast = log_forecast
        on = on or ("epoch" if monitor.startswith("val_") else "batch")
        if on not in ("batch", "epoch"):
            raise ValueError(f"on must be 'batch' or 'epoch', not {on!r}")
        self.address, self.study, self.run = address, study, run
        self.monitor = monitor
        self.on = on
        self.reporter_options = {"metric": monitor, **reporter_options}
        self.reporter: Reporter | None = None
        self._lookup = MetricLookup(monitor, f"Keras {on} logs")
        self._step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        options = dict(self.reporter_options)
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not options.get("max_step") and steps and epochs:
            options["max_step"] = int(steps) * int(epochs)
        optimizer = self.model.optimizer
        self._step = int(float(optimizer.iterations))
        schedule = getattr(optimizer, "_learning_rate", None)
        if (
            "lr_schedule" not in options
            and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
            and options.get("max_step")
        ):
            options["lr_schedule"] = callable_plan(
                lambda s: float(schedule(s)),
                options["max_step"],
                start_step=self._step,
            )
        self.reporter = Reporter(self.address, self.study, self.run, **options)

    def _current_lr(self) -> float | None:
        try:
            return float(self.model.optimizer.learning_rate)  # a tensor or a Variable
        except (AttributeError, TypeError, ValueError):
            return None

    def _report(self, reporter: Reporter, logs: dict[str, Any] | None) -> None:
        value = self._lookup.find(logs)
        if value is not None:
            reporter.report(self._step, value, lr=self._current_lr())
        if reporter.should_stop():
            self.model.stop_training = True

    def _add_forecast(self, reporter: Reporter, logs: dict[str, Any] | None) -> None:
        if self.log_forecast and logs is not None:
            forecast = reporter.forecast()
            if forecast is not None:
                logs.update(forecast.metrics())

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += 1
        if self.reporter is not None:
            if self.on == "batch":
                self._report(self.reporter, logs)
            self._add_forecast(self.reporter, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.reporter is not None:
            if self.on == "epoch":
                self._report(self.reporter, logs)
            self._add_forecast(self.reporter, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.reporter is not None:
            self.reporter.close()
