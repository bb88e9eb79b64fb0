"""A plain PyTorch training loop: report the loss and the optimizer's rate, ask whether to stop.

reporter = Reporter("127.0.0.1:50051", study="sweep", run="lr=3e-4", max_step=10_000)
loop = ForecastLoop(reporter, optimizer, scheduler=scheduler, total_steps=10_000)
for step in range(10_000):
    loss = train_step()
    if loop.step(step, loss):     # reported with the current lr; True: the service says stop
        break
reporter.close()
"""

from __future__ import annotations

from typing import Any

from forecaster_client._integration import require
from forecaster_client.reporter import Reporter
from forecaster_client.schedules import current_lr, torch_plan

require("torch", "torch")


class ForecastLoop:
    """Reports each step with the optimizer's current learning rate; step() says stop.

    Args:
        reporter: where the points go.
        optimizer: its first parameter group's ``lr`` is reported with each point.
        scheduler: a torch LR scheduler stepped once per training step (or every
            ``steps_per_scheduler_call`` steps); its plan up to total_steps is sent once.
        total_steps: the planned number of training steps (the budget).
        every: report and check every this many steps (1: each step).
    """

    def __init__(
        self,
        reporter: Reporter,
        optimizer: Any = None,
        *,
        scheduler: Any = None,
        total_steps: int = 0,
        steps_per_scheduler_call: int = 1,
        every: int = 1,
    ) -> None:
        self.reporter = reporter
        self.optimizer = optimizer
        self.every = max(1, int(every))
        if scheduler is not None and total_steps > 0:
            reporter.set_lr_schedule(
                torch_plan(
                    scheduler,
                    total_steps,
                    steps_per_scheduler_call,
                    start_step=steps_per_scheduler_call * max(0, scheduler.last_epoch),
                )
            )

    def step(self, step: int, value: Any) -> bool:
        """Reports value at step (a tensor is read off the training thread); True to stop."""
        if step % self.every:
            return False
        lr = current_lr(self.optimizer) if self.optimizer is not None else None
        self.reporter.report(step, value, lr=lr)
        return self.reporter.should_stop()
