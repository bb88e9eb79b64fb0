"""Planned learning-rate schedules read from the frameworks, so users need not describe them.

Any torch LR scheduler (LambdaLR, which HF Transformers uses, cosine, OneCycle, SequentialLR...)
is read by stepping a copy of it on a stand-in optimizer: no schedule shape is guessed, and the
real optimizer and model are never touched or copied. The result is an EXPLICIT schedule: the
steps where the rate moves by more than a small fraction, and the rate held between them.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

from forecaster_client._proto import forecaster_pb2 as pb

# At most this many (step, lr) pairs are sent; a finer plan is thinned.
MAX_POINTS = 512
# A step is listed when the rate moved by more than this fraction since the last listed one.
_REL_CHANGE = 0.01


def current_lr(optimizer: Any) -> float | None:
    """The first parameter group's learning rate (a float, or a tensor read as one)."""
    try:
        lr = optimizer.param_groups[0]["lr"]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return float(lr.item() if hasattr(lr, "item") else lr)


def explicit(steps: list[int], lrs: list[float]) -> pb.LrSchedule:
    """An EXPLICIT schedule from per-step samples, keeping the steps where the rate moves."""
    keep_steps: list[int] = []
    keep_lrs: list[float] = []
    for i, (s, lr) in enumerate(zip(steps, lrs, strict=True)):
        if not math.isfinite(lr):
            continue
        last = keep_lrs[-1] if keep_lrs else None
        is_end = i == len(steps) - 1
        if last is None or is_end or abs(lr - last) > _REL_CHANGE * max(abs(last), 1e-30):
            keep_steps.append(int(s))
            keep_lrs.append(float(lr))
    if len(keep_steps) > MAX_POINTS:
        idx = sorted(
            {round(i * (len(keep_steps) - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)}
        )
        keep_steps = [keep_steps[i] for i in idx]
        keep_lrs = [keep_lrs[i] for i in idx]
    return pb.LrSchedule(kind=pb.SCHEDULE_KIND_EXPLICIT, steps=keep_steps, values=keep_lrs)


def torch_plan(
    scheduler: Any, total_steps: int, steps_per_call: int = 1, start_step: int = 0
) -> Callable[[], pb.LrSchedule | None]:
    """The planned schedule of a torch LR scheduler up to total_steps, as a callable.

    The copy is taken now (cheap: the optimizer is replaced by a stand-in holding only its
    hyper-parameters); stepping it happens when the callable runs, on the Reporter's thread.
    steps_per_call: training steps between two scheduler.step() calls (Lightning's
    "epoch" interval: the batches per epoch). start_step: the training step the scheduler is at.
    """
    import torch

    if total_steps <= 0:
        return lambda: None
    optimizer = scheduler.optimizer
    stand_in = torch.optim.SGD(
        [
            {**{k: v for k, v in group.items() if k != "params"}, "params": [torch.zeros(1)]}
            for group in optimizer.param_groups
        ],
        lr=float(optimizer.param_groups[0]["lr"]),
    )
    # Everything that refers to the real optimizer (nested schedulers too) now refers to the
    # stand-in; the real one, its parameters and its state are never copied.
    twin = copy.deepcopy(scheduler, memo={id(optimizer): stand_in})
    steps_per_call = max(1, int(steps_per_call))

    def plan() -> pb.LrSchedule | None:
        steps = [start_step]
        lrs = [float(stand_in.param_groups[0]["lr"])]
        step = start_step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            while step < total_steps:
                stand_in.step()
                twin.step()
                step += steps_per_call
                steps.append(min(step, total_steps))
                lrs.append(float(stand_in.param_groups[0]["lr"]))
        return explicit(steps, lrs)

    return plan


def callable_plan(
    lr_at: Callable[[int], float], total_steps: int, start_step: int = 0
) -> Callable[[], pb.LrSchedule | None]:
    """A planned schedule from a function of the step (a Keras LearningRateSchedule)."""
    if total_steps <= 0:
        return lambda: None

    def plan() -> pb.LrSchedule | None:
        n = min(total_steps - start_step, 4 * MAX_POINTS)
        steps = sorted(
            {start_step + round(i * (total_steps - start_step) / max(n, 1)) for i in range(n + 1)}
        )
        return explicit(steps, [float(lr_at(s)) for s in steps])

    return plan
