"""The HF Transformers callback with a tiny model on CPU against the real service."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from forecaster.server._proto import forecaster_pb2 as pb

transformers = pytest.importorskip("transformers", reason="needs the transformers extra")
from forecaster_client.huggingface import ForecastCallback  # noqa: E402

# Importing the framework alone takes seconds (see SLOW_TO_IMPORT in conftest.py).
pytestmark = pytest.mark.slow

MAX_STEPS = 400


class Tiny(nn.Module):
    """Regression in the shape the Trainer expects: forward(**batch) -> {"loss": ...}. The
    loss turns NaN at step ``nan_from`` (a divergence)."""

    def __init__(self, nan_from: int = 10**9) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, x, labels=None):
        self.calls += 1
        loss = nn.functional.mse_loss(self.layer(x), labels)
        if self.calls >= self.nan_from:
            loss = loss * math.nan
        return {"loss": loss}


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def train(tmp_path, callback, model, **kw) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=64,  # the whole set: a smooth curve, no spike to flag
        learning_rate=0.01,
        lr_scheduler_type="cosine",
        warmup_steps=20,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        run_name="hf-tiny",
        **{"report_to": [], **kw},
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Data(), eval_dataset=Data(), callbacks=[callback]
    )
    trainer.train()
    return trainer


def test_stops_training_and_reports_lr_budget_schedule_and_config(service, tmp_path):
    callback = ForecastCallback(service.address, "hf", flush_interval_s=0.02)
    # The Trainer hides NaN losses by default; the divergence signal needs them shown.
    trainer = train(tmp_path, callback, Tiny(nan_from=40), logging_nan_inf_filter=False)

    assert trainer.state.global_step < MAX_STEPS  # the service said stop
    assert callback.reporter.decision.reason == "diverged"
    run = service.run("hf", "hf-tiny")  # the run is named after args.run_name
    assert run.state == pb.RUN_STATE_STOPPED
    assert run.spec.max_step == MAX_STEPS
    config = dict(run.spec.config)
    assert config["learning_rate"] == 0.01 and config["lr_scheduler_type"] == "cosine"
    plan = run.spec.lr_schedule
    assert plan.kind == pb.SCHEDULE_KIND_EXPLICIT
    assert plan.values[0] == 0.0 and max(plan.values) == pytest.approx(0.01, rel=0.01)
    assert plan.steps[-1] == MAX_STEPS and plan.values[-1] == pytest.approx(0.0, abs=1e-6)

    points = service.points("hf", "hf-tiny")
    assert points.steps[0] == 1
    # The logged rate of each step: the warm-up ramp, then the cosine decay.
    assert points.lr[:21] == pytest.approx(0.01 * np.arange(21) / 20)
    assert np.all(np.diff(points.lr[20:]) <= 0)  # cosine decay
    assert math.isnan(points.values[-1])


def test_an_eval_metric_is_read_from_the_evaluation_logs(service, tmp_path):
    callback = ForecastCallback(service.address, "hf", "eval", metric="eval_loss")
    train(tmp_path, callback, Tiny(), eval_strategy="steps", eval_steps=100)
    points = service.points("hf", "eval")
    assert points.steps.tolist() == [100, 200, 300, 400]
    assert service.run("hf", "eval").state == pb.RUN_STATE_FINISHED


def test_a_metric_missing_from_the_logs_is_one_warning_with_the_names_found(
    service, tmp_path, caplog
):
    callback = ForecastCallback(service.address, "hf", "typo", metric="los")
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        train(tmp_path, callback, Tiny())
    missing = [m for m in caplog.messages if "no metric 'los'" in m]
    assert len(missing) == 1 and "learning_rate" in missing[0] and "loss" in missing[0]


def test_the_forecast_lands_in_the_trainers_tensorboard_log(service, tmp_path):
    """report_to="tensorboard": HF's own TensorBoardCallback writes our forecast with its logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = ForecastCallback(
        service.address, "hf-tb", flush_interval_s=0.02, forecast_every_s=0.0
    )
    train(tmp_path, callback, Tiny(), report_to=["tensorboard"])  # under output_dir
    scalars: dict[str, list[float]] = {}
    for events in (tmp_path / "out").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    assert any(tag.endswith("loss") for tag in scalars)
    median = [v for tag, vs in scalars.items() if tag.endswith("forecast/final_median") for v in vs]
    high = [v for tag, vs in scalars.items() if tag.endswith("forecast/final_q95") for v in vs]
    assert median and high, sorted(scalars)
    assert all(math.isfinite(v) for v in median)
