"""`forecaster law`: fit a schedule law on finished runs, forecast the loss under new schedules.

Input files are CSV with a header naming the columns step, lr and (for training curves) loss.
lr may be given at every step or only at some (it is held until the next listed step); loss
may be empty on rows where it was not logged (the warm-up, say). Extra columns are ignored.
A schedule to predict may also be named instead of listed (`parse_schedule_spec`), e.g.
`wsd:total=50000,peak=1e-3,decay=0.2,shape=sqrt,warmup=300`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecaster.curves import Curve, Direction, LrProfile, LrSchedule, ScheduleKind
from forecaster.errors import InvalidArgumentError
from forecaster.models.schedule_laws import LAW_NAMES, StudyFit, fit_study


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
    if law not in LAW_NAMES:
        raise InvalidArgumentError(f"unknown law {law!r}; choose one of {', '.join(LAW_NAMES)}.")
    fit = fit_study(law, tuple(f.curve() for f in train))
    if fit is None:
        raise InvalidArgumentError(
            "no training curve has 4 or more losses past its warm-up; log more of the loss."
        )
    return fit


def describe(fit: StudyFit) -> str:
    """The fitted parameters with their standard errors, one per line."""
    lines = [
        f"{fit.law} fitted on {fit.n_runs} run(s), {fit.n_points} points, absolute units "
        "(lr as given, areas in lr x steps):"
    ]
    for name, value, sd in fit.parameters():
        lines.append(f"  {name:<28} {value:.5g}  (+/- {sd:.2g})")
    lines.append(f"  {'residual sd (relative)':<28} {fit.sigma:.3g}")
    for peak, own in zip(fit.peaks, fit.own, strict=False):
        if own is None:
            continue
        shown = ", ".join(f"{name} {value:.4g}" for name, value, _ in own.parameters())
        lines.append(
            f"  peak lr {peak:.3g}: its {own.n_runs} runs' own fit ({shown}); a schedule at "
            "this peak lr is forecast with it where it is the surer of the two at the end."
        )
    return "\n".join(lines)


_SPEC_KINDS = {"wsd": ScheduleKind.WSD, "cosine": ScheduleKind.COSINE,
               "linear": ScheduleKind.LINEAR, "constant": ScheduleKind.CONSTANT}  # fmt: skip
_SPEC_KEYS = {
    "total": "total_steps",
    "peak": "peak_lr",
    "final": "final_lr",
    "warmup": "warmup_steps",
    "decay": "decay_fraction",
    "shape": "decay_shape",
}
_SPEC_POINTS = 1000  # steps a named schedule is predicted at


def parse_schedule_spec(text: str) -> ScheduleFile:
    """A named schedule, `kind:key=value,...` with kind one of wsd, cosine, linear, constant
    and keys total, peak, final, warmup, decay (the cool-down fraction of wsd), shape
    (linear, cosine or sqrt); predicted at 1,000 steps up to total."""
    kind_text, _, rest = text.partition(":")
    kind = _SPEC_KINDS.get(kind_text.strip().lower())
    if kind is None:
        raise InvalidArgumentError(
            f"{text!r}: not a file, nor a schedule kind:key=value,...; the kinds are "
            f"{', '.join(_SPEC_KINDS)} (e.g. wsd:total=50000,peak=1e-3,decay=0.2)."
        )
    values: dict[str, object] = {"kind": kind}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in _SPEC_KEYS:
            raise InvalidArgumentError(
                f"{text!r}: {item!r} is not key=value with a key among {', '.join(_SPEC_KEYS)}."
            )
        field_name = _SPEC_KEYS[key.strip()]
        try:
            values[field_name] = (
                value.strip()
                if field_name == "decay_shape"
                else int(float(value))
                if field_name in ("total_steps", "warmup_steps")
                else float(value)
            )
        except ValueError:
            raise InvalidArgumentError(f"{text!r}: {key}={value!r} is not a number.") from None
    total = int(values.get("total_steps", 0) or 0)  # type: ignore[call-overload]
    if total <= 0:
        raise InvalidArgumentError(f"{text!r}: needs total=<steps> > 0.")
    schedule = LrSchedule(**values)  # type: ignore[arg-type]
    steps = np.unique(np.linspace(0, total, _SPEC_POINTS + 1).round().astype(np.int64))
    safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in text)
    lr = schedule.lr_at(steps)
    return ScheduleFile(Path(f"{safe}.csv"), steps, lr, np.full(len(steps), math.nan))


def read_plan(text: str) -> ScheduleFile:
    """A schedule to predict: a CSV file (step, lr) or a named schedule."""
    if Path(text).is_file() or text.endswith(".csv"):
        return read_schedule_csv(text, need_loss=False)
    return parse_schedule_spec(text)


@dataclass(frozen=True)
class Forecast:
    """A schedule's predicted curve: the median and the 5-95% band at its steps."""

    plan: ScheduleFile
    lr: np.ndarray
    defined: np.ndarray  # False before any lr was applied (the law says nothing there)
    q05: np.ndarray
    q50: np.ndarray
    q95: np.ndarray

    @property
    def final(self) -> tuple[float, float, float]:
        return float(self.q50[-1]), float(self.q05[-1]), float(self.q95[-1])


def forecast(fit: StudyFit, plan: ScheduleFile, seed: int = 0) -> Forecast:
    """The law's forecast of the loss under plan at every step of it."""
    profile = LrProfile.from_schedule(plan.schedule, int(plan.steps[-1]))
    steps = plan.steps.astype(float)
    samples = fit.predict(profile, steps, seed=seed)
    q05, q50, q95 = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)
    return Forecast(plan, profile.lr_at(steps), profile.s1(steps) > 0, q05, q50, q95)


def write_forecast(result: Forecast, out_dir: Path) -> Path:
    """Writes out_dir/<plan's name>: step, lr, loss_pred, loss_q05, loss_q95."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / result.plan.path.name
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss_pred", "loss_q05", "loss_q95"])
        for i, step in enumerate(result.plan.steps):
            ok = bool(result.defined[i])
            cells = [result.q50[i], result.q05[i], result.q95[i]]
            values = [f"{v:.6g}" if ok else "" for v in cells]
            writer.writerow([int(step), f"{result.lr[i]:.6g}", *values])
    return target


def predict(fit: StudyFit, schedule: ScheduleFile, out_dir: Path, seed: int = 0) -> Path:
    """Writes out_dir/<same name>: step, lr, loss_pred, loss_q05, loss_q95 at the file's steps."""
    return write_forecast(forecast(fit, schedule, seed), out_dir)


def compare(results: list[Forecast]) -> str:
    """The schedules ranked by predicted final loss (best first), with 5-95% intervals."""
    ranked = sorted(results, key=lambda r: r.final[0])
    lines = ["rank  final loss  [5%, 95%]            schedule"]
    for i, r in enumerate(ranked, start=1):
        med, lo, hi = r.final
        lines.append(f"{i:>4}  {med:.4f}      [{lo:.4f}, {hi:.4f}]   {r.plan.path.stem}")
    return "\n".join(lines)


def plot(fit: StudyFit, train: list[ScheduleFile], results: list[Forecast], path: Path) -> Path:
    """The fitted runs (points and the law), the predicted curves with their 5-95% bands, and
    every schedule's lr beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(9, 7), gridspec_kw={"height_ratios": [3, 1]}
    )
    for f in train:
        curve = f.curve()
        profile = LrProfile.from_schedule(f.schedule, int(f.steps[-1]))
        steps = curve.steps.astype(float)
        (dots,) = top.plot(steps, curve.values, ".", ms=2, alpha=0.5, label=f"{f.path.stem}")
        law = np.median(fit.predict(profile, steps, 100), axis=0)
        top.plot(steps, law, "-", lw=1, color=dots.get_color())
        bottom.plot(f.steps, profile.lr_at(f.steps), color=dots.get_color(), lw=1)
    for r in results:
        steps = r.plan.steps[r.defined]
        (line,) = top.plot(steps, r.q50[r.defined], "--", lw=1.5,
                           label=f"{r.plan.path.stem} (predicted)")  # fmt: skip
        top.fill_between(steps, r.q05[r.defined], r.q95[r.defined], alpha=0.2,
                         color=line.get_color())  # fmt: skip
        bottom.plot(r.plan.steps, r.lr, "--", color=line.get_color(), lw=1)
    finals = [v for r in results for v in r.q95[r.defined][-1:]]
    lows = [v for r in results for v in r.q05[r.defined][-1:]]
    if finals:
        span = max(finals) - min(lows)
        top.set_ylim(min(lows) - 2 * span - 0.02, max(finals) + 8 * span + 0.1)
    top.set_ylabel("loss")
    top.set_title(f"{fit.law}: fitted runs (dots, lines) and forecasts (dashed, 5-95%)")
    top.legend(fontsize=7)
    bottom.set_ylabel("lr")
    bottom.set_xlabel("step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
