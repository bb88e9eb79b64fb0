"""Hugging Face Transformers: a TrainerCallback that reports a logged metric and stops training.

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[
        ForecastCallback("127.0.0.1:50051", study="sweep", run="lr=3e-4", metric="loss"),
    ])

The budget (state.max_steps), the logged learning rate and the planned schedule of the
Trainer's LR scheduler are reported without further setup. "loss" is read from the training
logs (every ``logging_steps``); "eval_loss" and other "eval_" names from the evaluation logs.
Under DDP only rank 0 talks to the service and every rank stops at the same step.
"""

from __future__ import annotations

import sys
from typing import Any

from forecaster_client._integration import MetricLookup, require
from forecaster_client.reporter import Reporter
from forecaster_client.schedules import current_lr, torch_plan

require("transformers", "transformers")
from transformers import TrainerCallback  # noqa: E402

# The TrainingArguments worth keeping with the run as its config.
_CONFIG_KEYS = (
    "learning_rate",
    "weight_decay",
    "warmup_steps",
    "warmup_ratio",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
)


class ForecastCallback(TrainerCallback):
    """Reports ``metric`` from the Trainer's logs; sets control.should_training_stop on STOP.

    Args:
        address, study, run: where to report (see Reporter); run defaults to args.run_name.
        metric: a key of the Trainer's logs ("loss", "eval_loss", "eval_accuracy"...).
        log_forecast: add the service's forecast of the final metric (forecast/final_median,
            forecast/final_q05, forecast/final_q95, forecast/p_beat_incumbent) and the decision
            (forecast/stop) to the Trainer's logs, so that its reporting integrations
            (report_to: tensorboard, wandb, mlflow...) record them; False turns it off.
        **reporter_options: passed to Reporter (direction, target, policy, token...);
            max_step defaults to the Trainer's max_steps.
    """

    def __init__(
        self,
        address: str,
        study: str,
        run: str | None = None,
        *,
        metric: str = "loss",
        log_forecast: bool = True,
        **reporter_options: Any,
    ) -> None:
        self.log_forecast = log_forecast
        self.address, self.study, self.run = address, study, run
        self.metric = metric
        self.reporter_options = {"metric": metric, **reporter_options}
        self.reporter: Reporter | None = None
        self._lookup = MetricLookup(metric, "Trainer's logs")
        self._optimizer: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        options = dict(self.reporter_options)
        options.setdefault("max_step", state.max_steps)
        scheduler = kwargs.get("lr_scheduler")
        if "lr_schedule" not in options and scheduler is not None and state.max_steps > 0:
            options["lr_schedule"] = torch_plan(
                scheduler, state.max_steps, start_step=state.global_step
            )
        options.setdefault(
            "config", {k: getattr(args, k) for k in _CONFIG_KEYS if hasattr(args, k)}
        )
        self._optimizer = kwargs.get("optimizer")
        if self.log_forecast:
            _run_first(self)
        run = self.run or args.run_name or "run"
        self.reporter = Reporter(self.address, self.study, run, **options)

    def _expects(self, logs: dict[str, Any]) -> bool:
        """Whether this log is the kind that carries the metric (training vs evaluation)."""
        if "train_runtime" in logs:  # the summary at the end of training
            return self.metric in logs
        is_eval = any(k.startswith("eval_") for k in logs)
        return is_eval == self.metric.startswith("eval_")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self.reporter is None or not logs or not self._expects(logs):
            return
        value = self._lookup.find(logs)
        if value is None:
            return
        lr = logs.get("learning_rate")
        if lr is None and self._optimizer is not None:
            lr = current_lr(self._optimizer)
        self.reporter.report(state.global_step, value, lr=lr)
        if self.log_forecast:
            forecast = self.reporter.forecast()
            if forecast is not None:
                logs.update(forecast.metrics())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reporter is not None and self.reporter.should_stop():
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reporter is not None:
            self.reporter.close()


def _run_first(callback: TrainerCallback) -> None:
    """Moves the callback to the front of the Trainer's callbacks, so that the forecast it
    adds to the logs reaches the reporting integrations (the Trainer puts them before the
    user's callbacks). The handler is the caller of on_train_begin; when it cannot be found,
    the forecast still reaches the callbacks after this one."""
    from transformers.trainer_callback import CallbackHandler

    frame = sys._getframe(2)  # _run_first <- on_train_begin <- CallbackHandler.call_event
    handler = frame.f_locals.get("self")
    if isinstance(handler, CallbackHandler) and callback in handler.callbacks:
        handler.callbacks.remove(callback)
        handler.callbacks.insert(0, callback)
