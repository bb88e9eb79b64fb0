"""The plain PyTorch loop helper, and planned schedules read from torch schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster_client import Reporter
from forecaster_client.pytorch import ForecastLoop
from forecaster_client.schedules import explicit, torch_plan

TOTAL = 1000


def test_a_plain_loop_stops_when_the_service_says_so(service):
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=TOTAL)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    with Reporter(service.address, "torch", "loop", max_step=TOTAL, flush_interval_s=0.02) as r:
        loop = ForecastLoop(r, optimizer, scheduler=scheduler, total_steps=TOTAL)
        stopped_at, rates = None, []
        for step in range(1, TOTAL + 1):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
            if loop.step(step, loss if step < 50 else loss * math.nan):
                stopped_at = step
                break
    assert stopped_at is not None and stopped_at >= 50
    run = service.run("torch", "loop")
    assert run.state == pb.RUN_STATE_STOPPED
    plan = run.spec.lr_schedule
    assert plan.kind == pb.SCHEDULE_KIND_EXPLICIT and plan.steps[-1] == TOTAL
    assert max(plan.values) == pytest.approx(1e-2, rel=0.02)  # the one-cycle peak
    points = service.points("torch", "loop")
    assert points.steps.tolist() == list(range(1, stopped_at + 1))
    assert points.lr.tolist() == pytest.approx(rates)  # the optimizer's rate at each step


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=300, gamma=0.1),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 100)),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=100),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL - 100),
            ],
            milestones=[100],
        ),
    ],
    ids=["cosine", "step", "lambda", "sequential"],
)
def test_the_plan_is_what_the_scheduler_will_do_and_the_real_optimizer_is_untouched(make):
    params = [torch.nn.Parameter(torch.randn(10))]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    scheduler = make(optimizer)
    before = optimizer.param_groups[0]["lr"]
    plan = torch_plan(scheduler, TOTAL)()
    assert optimizer.param_groups[0]["lr"] == before and scheduler.last_epoch == 0

    actual = {0: optimizer.param_groups[0]["lr"]}
    for step in range(1, TOTAL + 1):
        optimizer.step()
        scheduler.step()
        actual[step] = optimizer.param_groups[0]["lr"]
    # The plan holds each listed rate until the next listed step, within its 1% resolution.
    for i, step in enumerate(plan.steps):
        assert plan.values[i] == pytest.approx(actual[step], rel=1e-9)
    for step in range(TOTAL + 1):
        i = max(j for j, s in enumerate(plan.steps) if s <= step)
        assert actual[step] == pytest.approx(plan.values[i], rel=0.011, abs=1e-12)


def test_a_long_plan_is_thinned_to_its_limit():
    steps = list(range(100_000))
    plan = explicit(steps, [1.0 / (1 + s) for s in steps])
    assert len(plan.steps) <= 512 and plan.steps[0] == 0 and plan.steps[-1] == 99_999
