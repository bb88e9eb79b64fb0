"""PyTorch Lightning: a Callback that reports the monitored metric and stops the Trainer.

    trainer = L.Trainer(max_steps=10_000, callbacks=[
        ForecastCallback("127.0.0.1:50051", study="sweep", run="lr=3e-4", monitor="train_loss"),
    ])

The budget (the Trainer's estimated stepping batches), the optimizer's current learning rate and
the planned schedule of the first LR scheduler are reported without further setup. The sanity
check's validation pass is skipped. Under DDP only rank 0 talks to the service and every rank
stops at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from forecaster_client._integration import MetricLookup, require
from forecaster_client.reporter import Reporter
from forecaster_client.schedules import current_lr, torch_plan

require("lightning", "lightning")
from lightning.pytorch.callbacks import Callback  # noqa: E402


class ForecastCallback(Callback):
    """Reports ``monitor`` to the service; sets ``trainer.should_stop`` when it says stop.

    Args:
        address, study, run: where to report (see Reporter).
        monitor: a name the LightningModule logs with self.log().
        on: "step" reports after each training batch, "validation" after each validation
            pass; default: "validation" for names starting with "val", else "step".
        every_n_steps: with on="step", report every n-th optimizer step.
        log_forecast: log the service's forecast of the final metric (median, 5% and 95%,
            P(beat the incumbent)) and the decision (forecast/stop) to the Trainer's loggers
            (TensorBoard, W&B, MLflow...) whenever a new one arrives; False turns it off.
        **reporter_options: passed to Reporter (metric, direction, target, policy, token...);
            max_step defaults to the Trainer's budget.
    """

    def __init__(
        self,
        address: str,
        study: str,
        run: str,
        *,
        monitor: str = "train_loss",
        on: str | None = None,
        every_n_steps: int = 1,
        log_forecast: bool = True,
        **reporter_options: Any,
    ) -> None:
        super().__init__()
        self.log_forecast = log_forecast
        self._logged: tuple[int, str, str] | None = None
        on = on or ("validation" if monitor.startswith("val") else "step")
        if on not in ("step", "validation"):
            raise ValueError(f"on must be 'step' or 'validation', not {on!r}")
        self.address, self.study, self.run = address, study, run
        self.monitor = monitor
        self.on = on
        self.every_n_steps = max(1, int(every_n_steps))
        self.reporter_options = {"metric": monitor, **reporter_options}
        self.reporter: Reporter | None = None
        self._lookup = MetricLookup(monitor, "Trainer's callback_metrics")
        self._last_step = -1

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        options = dict(self.reporter_options)
        budget = trainer.estimated_stepping_batches
        if (
            not options.get("max_step")
            and isinstance(budget, int | float)
            and math.isfinite(budget)
        ):
            options["max_step"] = int(budget)
        if "lr_schedule" not in options:
            options["lr_schedule"] = self._planned_schedule(trainer, options.get("max_step", 0))
        if "config" not in options and isinstance(getattr(pl_module, "hparams", None), Mapping):
            options["config"] = dict(pl_module.hparams)
        self.reporter = Reporter(self.address, self.study, self.run, **options)

    @staticmethod
    def _planned_schedule(trainer: Any, total_steps: int) -> Any:
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        if not configs or total_steps <= 0:
            return None
        config = configs[0]
        every = max(1, int(config.frequency or 1))
        if config.interval == "epoch":
            every *= max(1, int(trainer.num_training_batches))
        return torch_plan(config.scheduler, total_steps, every, start_step=trainer.global_step)

    def _report(self, reporter: Reporter, trainer: Any) -> None:
        step = trainer.global_step
        if step <= self._last_step:
            return
        value = self._lookup.find(trainer.callback_metrics)
        if value is None:
            return
        self._last_step = step
        optimizers = trainer.optimizers
        lr = current_lr(optimizers[0]) if optimizers else None
        reporter.report(step, value, lr=lr)

    def _check(self, reporter: Reporter, trainer: Any, wait_s: float = 0.0) -> None:
        if self.log_forecast:
            self._log_forecast(reporter, trainer, wait_s)
        if reporter.should_stop():
            trainer.should_stop = True

    def _log_forecast(self, reporter: Reporter, trainer: Any, wait_s: float) -> None:
        """A forecast not logged yet goes to every logger of the Trainer, at the current step."""
        forecast = reporter.forecast(wait_s)
        if forecast is None:
            return
        key = (forecast.observed_until_step, forecast.decision.action, forecast.decision.reason)
        if key == self._logged:
            return
        self._logged = key
        for logger in trainer.loggers:
            logger.log_metrics(forecast.metrics(), step=trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if self.reporter is None:
            return
        if self.on == "step" and trainer.global_step % self.every_n_steps == 0:
            self._report(self.reporter, trainer)
        self._check(self.reporter, trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.reporter is None or trainer.sanity_checking or self.on != "validation":
            return
        self._report(self.reporter, trainer)
        self._check(self.reporter, trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.reporter is not None:
            if self.log_forecast and self.reporter.flush(2.0):
                self._log_forecast(self.reporter, trainer, wait_s=2.0)  # the last word
            self.reporter.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.reporter is not None:
            self.reporter.close(state=None)  # a crashed job may resume into the same run
