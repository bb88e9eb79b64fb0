"""The Lightning callback with a tiny model on CPU against the real service."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from forecaster.server._proto import forecaster_pb2 as pb

L = pytest.importorskip("lightning", reason="needs the lightning extra of trainer_plugins")
from forecaster_client.lightning import ForecastCallback  # noqa: E402

# Importing the framework alone takes seconds (see SLOW_TO_IMPORT in conftest.py).
pytestmark = pytest.mark.slow

MAX_STEPS = 2000


class Tiny(L.LightningModule):
    """Linear regression whose logged loss turns NaN at ``nan_from`` (a divergence)."""

    def __init__(self, lr: float = 0.05, nan_from: int = 10**9) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        logged = loss if self.global_step < self.hparams.nan_from else loss * math.nan
        self.log("train_loss", logged)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=MAX_STEPS)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader(batch_size: int = 8) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def trainer(callback, **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=MAX_STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **kw,
    )


def test_stops_the_trainer_and_reports_lr_budget_schedule_and_config(service):
    callback = ForecastCallback(service.address, "lightning", "tiny", flush_interval_s=0.02)
    t = trainer(callback, limit_val_batches=0)
    t.fit(Tiny(nan_from=30), loader(batch_size=64))  # full batches: a smooth curve

    assert t.global_step < MAX_STEPS  # the service said stop
    assert callback.reporter.decision.reason == "diverged"
    run = service.run("lightning", "tiny")
    assert run.state == pb.RUN_STATE_STOPPED
    assert run.spec.max_step == MAX_STEPS
    assert dict(run.spec.config) == {"lr": 0.05, "nan_from": 30.0}
    plan = run.spec.lr_schedule
    assert plan.kind == pb.SCHEDULE_KIND_EXPLICIT and plan.steps[0] == 0
    assert plan.steps[-1] == MAX_STEPS and plan.values[0] == pytest.approx(0.05)
    mid = list(plan.steps).index(min(plan.steps, key=lambda s: abs(s - MAX_STEPS // 2)))
    cosine = 0.05 * 0.5 * (1 + math.cos(math.pi * plan.steps[mid] / MAX_STEPS))
    assert plan.values[mid] == pytest.approx(cosine, rel=0.02)

    points = service.points("lightning", "tiny")
    assert points.steps[0] == 1 and all(points.steps[1:] - points.steps[:-1] == 1)
    expected_lr = 0.05 * 0.5 * (1 + np.cos(np.pi * points.steps / MAX_STEPS))
    assert points.lr == pytest.approx(expected_lr, rel=1e-6)  # the optimizer's rate at each step
    assert math.isnan(points.values[-1])


def test_a_validation_metric_skips_the_sanity_check(service):
    callback = ForecastCallback(service.address, "lightning", "val", monitor="val_loss")
    t = trainer(callback, val_check_interval=4, num_sanity_val_steps=2, max_epochs=2)
    t.fit(Tiny(), loader(), loader())
    points = service.points("lightning", "val")
    assert points.steps.tolist() == [4, 8, 12, 16]  # no point from the sanity check at step 0
    assert service.run("lightning", "val").state == pb.RUN_STATE_FINISHED


def test_a_metric_that_is_not_logged_is_one_warning_with_the_names_found(service, caplog):
    callback = ForecastCallback(service.address, "lightning", "typo", monitor="train_los")
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        trainer(callback, max_epochs=1, limit_val_batches=0).fit(Tiny(), loader())
    missing = [m for m in caplog.messages if "no metric 'train_los'" in m]
    assert len(missing) == 1 and "found: train_loss" in missing[0]


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under log_dir, read with tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_the_forecast_lands_in_the_trainers_tensorboard_log(service, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    callback = ForecastCallback(
        service.address, "lightning-tb", "tiny", flush_interval_s=0.02, forecast_every_s=0.0,
        max_step=400,
    )  # fmt: skip
    t = L.Trainer(
        max_steps=300, accelerator="cpu", devices=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback], log_every_n_steps=1,
    )  # fmt: skip
    t.fit(Tiny(), loader(batch_size=64))
    scalars = _scalars(tmp_path / "tb")
    assert "train_loss" in scalars  # the user's own metric, beside ours
    for tag in ("forecast/final_median", "forecast/final_q05", "forecast/final_q95",
                "forecast/stop"):  # fmt: skip
        assert tag in scalars, sorted(scalars)
    median = dict(scalars["forecast/final_median"])
    low, high = dict(scalars["forecast/final_q05"]), dict(scalars["forecast/final_q95"])
    for step, value in median.items():
        assert low[step] <= value <= high[step] and math.isfinite(value)
        assert low[step] >= 0.0  # a loss (the kind "train_loss" names) is never forecast < 0
    # The reporter's forecast after fit() may be one report newer than the last one logged (the
    # sender thread refreshes it while the trainer closes): the same run's forecast, so the
    # last logged median lies within its interval.
    last = callback.reporter.forecast()
    assert last is not None and last.low <= median[max(median)] <= last.high


def test_log_forecast_false_logs_nothing_of_ours(service, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    callback = ForecastCallback(
        service.address, "lightning-tb", "quiet", flush_interval_s=0.02, forecast_every_s=0.0,
        max_step=400, log_forecast=False,
    )  # fmt: skip
    t = L.Trainer(
        max_steps=100, accelerator="cpu", devices=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback], log_every_n_steps=1,
    )  # fmt: skip
    t.fit(Tiny(), loader(batch_size=64))
    scalars = _scalars(tmp_path / "tb")
    assert "train_loss" in scalars and not any(tag.startswith("forecast/") for tag in scalars)
