"""`forecaster law`: fit a schedule law on finished runs, forecast the loss under new schedules.

Input files are CSV with a header naming the columns step, lr and (for training curves) loss.
lr may be given at every step or only at some (it is held until the next listed step); loss
may be empty on rows where it was not logged (the warm-up, say). Extra columns are ignored.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecaster.curves import Curve, Direction, LrProfile, LrSchedule, ScheduleKind
from forecaster.errors import InvalidArgumentError
from forecaster.models.annealing_law import LAWS, StudyFit, fit_study, predict_from_study


@dataclass(frozen=True)
class ScheduleFile:
    """One CSV: the steps, the lr known at some of them, and the loss where logged."""

    path: Path
    steps: np.ndarray
    lr: np.ndarray  # NaN where not given
    loss: np.ndarray  # NaN where not logged

    @property
    def schedule(self) -> LrSchedule:
        known = ~np.isnan(self.lr)
        return LrSchedule(
            ScheduleKind.EXPLICIT,
            steps=tuple(int(s) for s in self.steps[known]),
            values=tuple(float(v) for v in self.lr[known]),
        )

    def curve(self) -> Curve:
        logged = ~np.isnan(self.loss)
        return Curve(
            self.steps[logged],
            self.loss[logged],
            Direction.MIN,
            max_step=int(self.steps[-1]),
            schedule=self.schedule,
        )


def read_schedule_csv(path: str | Path, *, need_loss: bool) -> ScheduleFile:
    """Reads and validates one file; errors name the file, line and column."""
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"{p}: no such file.")
    with p.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InvalidArgumentError(f"{p}: the file is empty; expected a header line.")
        names = [h.strip().lower() for h in header]
        required = ["step", "lr"] + (["loss"] if need_loss else [])
        missing = [c for c in required if c not in names]
        if missing:
            raise InvalidArgumentError(
                f"{p}, line 1: missing column(s) {', '.join(missing)}; the header has "
                f"{', '.join(header) or 'nothing'}."
            )
        col = {c: names.index(c) for c in ("step", "lr", "loss") if c in names}
        steps: list[int] = []
        lrs: list[float] = []
        losses: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(names):
                raise InvalidArgumentError(
                    f"{p}, line {line}: {len(row)} fields but the header has {len(names)}."
                )
            number = _number(p, line, "step", row[col["step"]], integer=True)
            step = None if number is None else int(number)
            if step is None or step < 0:
                raise InvalidArgumentError(f"{p}, line {line}, column step: needs a step >= 0.")
            if steps and step <= steps[-1]:
                raise InvalidArgumentError(
                    f"{p}, line {line}, column step: {step} after {steps[-1]}; steps must increase."
                )
            lr = _number(p, line, "lr", row[col["lr"]])
            if lr is not None and lr < 0:
                raise InvalidArgumentError(f"{p}, line {line}, column lr: {lr} is negative.")
            loss = _number(p, line, "loss", row[col["loss"]]) if "loss" in col else None
            steps.append(step)
            lrs.append(math.nan if lr is None else lr)
            losses.append(math.nan if loss is None else loss)
    if not steps:
        raise InvalidArgumentError(f"{p}: no data rows after the header.")
    if all(math.isnan(v) for v in lrs):
        raise InvalidArgumentError(f"{p}, column lr: no row gives a learning rate.")
    if need_loss and sum(not math.isnan(v) for v in losses) < 4:
        raise InvalidArgumentError(
            f"{p}, column loss: a training curve needs at least 4 logged losses."
        )
    return ScheduleFile(p, np.array(steps), np.array(lrs), np.array(losses))


def _number(path: Path, line: int, column: str, cell: str, integer: bool = False) -> float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{path}, line {line}, column {column}: {text!r} is not a number."
        ) from None
    if not math.isfinite(value) or (integer and value != int(value)):
        kind = "an integer" if integer else "a finite number"
        raise InvalidArgumentError(f"{path}, line {line}, column {column}: {text!r} is not {kind}.")
    return value


def fit_law(train: list[ScheduleFile], law: str = "annealing_law") -> StudyFit:
    """The law fitted jointly on the training curves."""
    if law not in LAWS:
        raise InvalidArgumentError(f"unknown law {law!r}; choose one of {', '.join(LAWS)}.")
    fit = fit_study(law, tuple(f.curve() for f in train))
    if fit is None:
        raise InvalidArgumentError(
            "no training curve has 4 or more losses past its warm-up; log more of the loss."
        )
    return fit


def describe(fit: StudyFit) -> str:
    """The fitted parameters, one per line."""
    names = {
        "annealing_law": (["alpha", "tau (fraction of the budget)"], "C"),
        "multi_power_law": (["alpha", "c", "beta", "gamma"], "B"),
    }[fit.law]
    shape, anneal = names
    lines = [f"{fit.law} fitted on {fit.n_runs} run(s), areas in units of peak lr x budget:"]
    lines += [f"  {n:<30} {v:.4g}" for n, v in zip(shape, fit.theta, strict=True)]
    for n, v, sd in zip(["L0", "A", anneal], fit.coef, fit.coef_sd, strict=True):
        lines.append(f"  {n:<30} {v:.4g}  (+/- {sd:.2g} across runs)")
    lines.append(f"  {'residual sd':<30} {fit.sigma:.3g}")
    return "\n".join(lines)


def predict(fit: StudyFit, schedule: ScheduleFile, out_dir: Path, seed: int = 0) -> Path:
    """Writes out_dir/<same name>: step, lr, loss_pred, loss_q05, loss_q95 at the file's steps."""
    profile = LrProfile.from_schedule(schedule.schedule, int(schedule.steps[-1]))
    samples = predict_from_study(
        fit, profile, int(schedule.steps[-1]), schedule.steps.astype(float), seed=seed
    )
    q05, q50, q95 = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)
    lr = profile.lr_at(schedule.steps)
    # Before any lr has been applied the law says nothing: those cells are left empty.
    defined = profile.s1(schedule.steps.astype(float)) > 0
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / schedule.path.name
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss_pred", "loss_q05", "loss_q95"])
        for ok, row in zip(
            defined, zip(schedule.steps, lr, q50, q05, q95, strict=True), strict=True
        ):
            values = [f"{v:.6g}" if ok else "" for v in row[2:]]
            writer.writerow([int(row[0]), f"{row[1]:.6g}", *values])
    return target
