"""The schedule laws as they were before issue 15 (areas in units of peak lr x budget), kept
only so that benchmarks/schedule_laws.py can measure the new fit beside the old one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from forecaster.curves import Curve, Direction, FloatArray, LrProfile, LrSchedule, thin_indices
from forecaster.models.base import StudyHistory
from forecaster.models.baselines import constant_prediction, unfit_prediction
from forecaster.models.fitting import Prior, solve_grid
from forecaster.models.power_law import PowerLawForecaster
from forecaster.models.prediction import Prediction

_MIN_POINTS_ALONE = 5  # a run without study priors needs this many points past warm-up
_MAX_FIT_POINTS = 120  # per run
_MAX_HISTORY_RUNS = 12  # a study fit uses at most this many completed runs (the newest)
_STUDY_POINTS_PER_RUN = 30
# Extrapolation widening, in multiples of the fit's residual sd per unit of
# log(remaining forward area / observed forward area); set by hand and checked on the corpus
# (coverage_90 ~0.83-0.93 on lr_scheduling_llm and colpret, 0.73 on nanogpt_speedrun).
_EXTRAPOLATION_SPREAD = 2.0


@dataclass(frozen=True)
class Units:
    """A run's peak lr and budget: its areas are divided by their product."""

    lr: float
    steps: float

    @property
    def area(self) -> float:
        return self.lr * self.steps


@dataclass(frozen=True)
class _Law:
    """One schedule law: its shape-parameter grid and its three basis columns."""

    name: str
    theta: FloatArray  # (m, d) study-level grid
    prior_theta: FloatArray  # (d,) corpus prior, used when a study has no completed run
    prior_anneal_ratio: float  # corpus prior of (C or B) / A
    anneal: Callable[[LrProfile, FloatArray, FloatArray, Units], FloatArray] = field(repr=False)
    # anneal(profile, steps, theta (m, d), units) -> (m, n) annealing column

    def basis(self, profile: LrProfile, steps: FloatArray, units: Units) -> Callable:
        s1 = np.maximum(profile.s1(steps) / units.area, 1e-9)
        log_s1 = np.log(s1)

        def columns(theta: FloatArray, _x: FloatArray) -> FloatArray:
            power = np.exp(-theta[:, :1] * log_s1[None, :])
            anneal = self.anneal(profile, steps, theta, units)
            return np.stack([np.ones_like(power), power, -anneal], axis=-1)

        return columns

    def evaluate(
        self,
        profile: LrProfile,
        steps: FloatArray,
        units: Units,
        theta: FloatArray,
        coef: FloatArray,
    ) -> FloatArray:
        """The law's loss at steps for each (theta, coef) row: (k, n)."""
        columns = self.basis(profile, steps, units)(theta, steps)  # (k, n, 3)
        return np.asarray(np.matmul(columns, coef[:, :, None])[:, :, 0])


def _tissue_anneal(
    profile: LrProfile, steps: FloatArray, theta: FloatArray, units: Units
) -> FloatArray:
    out = np.empty((len(theta), len(steps)))
    for tau in np.unique(theta[:, 1]):
        rows = theta[:, 1] == tau
        out[rows] = profile.s2(steps, float(tau) * units.steps)[None, :] / units.area
    return out


def _multi_power_anneal(
    profile: LrProfile, steps: FloatArray, theta: FloatArray, units: Units
) -> FloatArray:
    out = np.empty((len(theta), len(steps)))
    keys = theta[:, 1:]
    for key in np.unique(keys, axis=0):
        rows = (keys == key).all(axis=1)
        c, beta, gamma = (float(v) for v in key)
        # c is per unit of (area / reference area); LrProfile counts area in peak-lr steps.
        scale = profile.peak / units.area
        drop = _old_multi_power_drop(profile, steps, c * scale, beta, gamma)
        out[rows] = drop[None, :] * profile.peak / units.lr
    return out


def _grid(*axes: FloatArray) -> FloatArray:
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


# Priors for a study with no completed run: alpha ~0.5 as Tissue et al. and Luo et al. report
# for LLM pre-training, and an annealing coefficient of 0.3 A with 100% uncertainty. Set by
# hand, in the range `forecaster law` fits on lr_scheduling_llm tasks (alpha 0.5-0.63).
LAWS: dict[str, _Law] = {
    "annealing_law": _Law(
        "annealing_law",
        _grid(
            np.geomspace(0.1, 2.0, 14),
            np.array([0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064]),
        ),
        np.array([0.5, 0.01]),
        0.3,
        _tissue_anneal,
    ),
    "multi_power_law": _Law(
        "multi_power_law",
        _grid(
            np.geomspace(0.1, 2.0, 8),
            np.array([5.0, 50.0, 500.0]),
            np.array([0.3, 0.6]),
            np.array([0.3, 0.6]),
        ),
        np.array([0.5, 50.0, 0.6, 0.6]),
        0.3,
        _multi_power_anneal,
    ),
}


@dataclass(frozen=True)
class StudyFit:
    """The law fitted jointly on a study's completed runs."""

    law: str
    theta: FloatArray  # (d,)
    coef: FloatArray  # (L0, A, C or B)
    coef_sd: FloatArray
    sigma: float  # residual sd, loss units
    n_runs: int


def _fit_points(curve: Curve) -> tuple[FloatArray, FloatArray]:
    """Steps and losses a law is fitted on: finite, past the warm-up, thinned."""
    loss = curve.loss_view().finite()
    steps = loss.steps.astype(np.float64)
    keep = steps > 0
    profile = LrProfile.of(curve)
    if profile is not None:
        # Past the warm-up ramp: from the first step at half the peak lr on.
        warm = float(profile.knots[int(np.argmax(profile.values >= 0.5 * profile.peak))])
        keep &= (steps >= warm) & (profile.s1(steps) > 0)
    steps, values = steps[keep], loss.values[keep]
    idx = thin_indices(len(steps), _MAX_FIT_POINTS)
    return steps[idx], values[idx]


def fit_study(law_name: str, curves: tuple[Curve, ...]) -> StudyFit | None:
    """Fits the law jointly on completed curves that have an lr; None when none do.

    Shape (alpha and the annealing shape) and the annealing coefficient are shared; L0 and A
    are per run (runs of a study differ in peak lr and horizon, which the areas only partly
    absorb), and their spread across runs becomes the prior's width for a new run.
    """
    law = LAWS[law_name]
    usable: list[tuple[LrProfile, FloatArray, FloatArray]] = []
    horizons: list[float] = []
    for c in curves[-_MAX_HISTORY_RUNS:]:
        profile = LrProfile.of(c)
        if profile is None or c.direction is not Direction.MIN:
            continue
        steps, y = _fit_points(c)
        idx = thin_indices(len(y), _STUDY_POINTS_PER_RUN)
        if len(y) >= 4:
            usable.append((profile, steps[idx], y[idx]))
            horizons.append(float(c.horizon))
    if not usable:
        return None
    columns = [
        law.basis(p, s, Units(p.peak, h)) for (p, s, _), h in zip(usable, horizons, strict=True)
    ]
    sizes = [len(y) for _, _, y in usable]
    n_runs = len(usable)
    y_all = np.concatenate([y for _, _, y in usable])

    def block_basis(theta: FloatArray, _x: FloatArray) -> FloatArray:
        # Columns: L0_1, A_1, ..., L0_R, A_R, C (shared).
        out = np.zeros((len(theta), len(y_all), 2 * n_runs + 1))
        start = 0
        for r, (col, size) in enumerate(zip(columns, sizes, strict=True)):
            block = col(theta, _x)
            out[:, start : start + size, 2 * r : 2 * r + 2] = block[:, :, :2]
            out[:, start : start + size, -1] = block[:, :, 2]
            start += size
        return out

    nonneg = (False, True) * n_runs + (True,)
    fit = solve_grid(block_basis, law.theta, y_all, y_all, nonneg=nonneg)
    best = fit.best
    coef = fit.coef[best]
    l0, a = coef[0:-1:2], coef[1:-1:2]
    anneal_sd = float(np.sqrt(max(fit.cov[best][-1, -1], 0.0)))
    return StudyFit(
        law_name,
        law.theta[best],
        np.array([np.median(l0), np.median(a), coef[-1]]),
        np.array([_spread(l0), _spread(a), anneal_sd]),
        float(np.sqrt(fit.sigma2[best])),
        n_runs,
    )


def _spread(values: FloatArray) -> float:
    """Robust sd across runs (0 for a single run)."""
    if len(values) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass(frozen=True)
class FittedLaw:
    """A run's law with sampled coefficients: evaluate it under any schedule."""

    forecaster: _ScheduleLawForecaster
    curve: Curve
    units: Units
    theta: FloatArray  # (k, d) per sample
    coef: FloatArray  # (k, 3) per sample
    noise: FloatArray  # (k,)
    extra: FloatArray  # (k,) extrapolation spread per unit of log-area
    observed_s1: float
    notes: tuple[str, ...]

    def prediction(self, profile: LrProfile) -> Prediction:
        """The predictive distribution under this learning-rate profile."""
        law = LAWS[self.forecaster.name]
        units, theta, coef = self.units, self.theta, self.coef
        observed = self.observed_s1
        noise, extra = self.noise, self.extra

        def sampler(steps: FloatArray) -> FloatArray:
            steps = np.asarray(steps, dtype=np.float64)
            mean = law.evaluate(profile, steps, units, theta, coef)
            s1 = profile.s1(steps) / units.area
            grow = np.log(np.maximum(s1 / max(observed, 1e-12), 1.0))
            out: FloatArray = mean + noise[:, None] + extra[:, None] * grow[None, :]
            return out

        return Prediction(
            self.forecaster.name,
            self.forecaster.version,
            self.curve.direction,
            sampler,
            self.curve.last_step,
            self.curve.loss_view().best_value(),
            converged=True,
            notes=self.notes,
        )


def schedule_known(curve: Curve) -> bool:
    """Whether the schedule laws apply: the metric is a loss and its lr is known to the budget
    (otherwise they answer with the power-law ensemble)."""
    return curve.direction is Direction.MIN and LrProfile.of(curve, curve.horizon) is not None


@dataclass(frozen=True)
class _ScheduleLawForecaster:
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    n_samples: int = 400
    seed: int = 0

    def needs_history(self, curve: Curve) -> bool:
        return schedule_known(curve)  # without a known lr this is the power law, alone

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        fitted = self.fit_law(curve, history)
        if isinstance(fitted, Prediction):
            return fitted
        profile = LrProfile.of(curve, curve.horizon)
        assert profile is not None
        return fitted.prediction(profile)

    def what_if(
        self,
        curve: Curve,
        schedule: LrSchedule,
        from_step: int | None = None,
        history: StudyHistory | None = None,
    ) -> Prediction:
        """The forecast if the lr followed `schedule` from from_step (default: the last
        observed step) on: "what if I decay now?"."""
        fitted = self.fit_law(curve, history)
        if isinstance(fitted, Prediction):
            return fitted
        profile = LrProfile.of(curve, curve.horizon)
        assert profile is not None
        start = curve.last_step if from_step is None else from_step
        horizon = max(curve.horizon, schedule.end_step or 0)
        return fitted.prediction(profile.with_plan_after(schedule, start, horizon))

    def fit_law(self, curve: Curve, history: StudyHistory | None) -> FittedLaw | Prediction:
        """The run's fitted law, or a fallback Prediction that says why there is none."""
        diverged = unfit_prediction(curve, 1, 0, self.name, self.version, self.n_samples)
        if diverged is not None:
            return diverged
        profile = LrProfile.of(curve, curve.horizon)
        if profile is None or curve.direction is not Direction.MIN:
            reason = (
                "no learning rate is known for this run"
                if profile is None
                else "the metric is not a loss (higher is better)"
            )
            fallback = PowerLawForecaster(name=self.name).fit(curve)
            note = f"{reason}: the {self.name} needs one; this is the power-law ensemble."
            return replace(
                fallback,
                model_version=self.version,  # the name is ours, so is the version
                notes=(note, *fallback.notes),
                converged=False,
            )
        law = LAWS[self.name]
        study = (
            history.fits.get(self.name, lambda: fit_study(self.name, history.curves))
            if history and history.curves
            else None
        )
        steps, y = _fit_points(curve)
        notes: list[str] = []
        if study is None and len(y) < _MIN_POINTS_ALONE:
            note = (
                f"only {len(y)} usable points past the warm-up and no completed run in the "
                "study: the forecast is the last value with a wide interval."
            )
            return constant_prediction(curve, self.name, self.version, self.n_samples, 0, note)
        units = Units(profile.peak, float(curve.horizon))
        if study is not None:
            theta = _grid(
                study.theta[:1] * np.array([0.8, 0.9, 1.0, 1.12, 1.25]),
                *[np.array([v]) for v in study.theta[1:]],
            )
            notes.append(f"shape and annealing term shared with {study.n_runs} completed runs.")
        else:
            theta = _grid(
                np.geomspace(0.15, 1.5, 10), *[np.array([v]) for v in law.prior_theta[1:]]
            )
            notes.append(
                "no completed run in the study yet: the annealing term starts from the corpus "
                "prior."
            )
        basis = law.basis(profile, steps, units)
        # Coefficients: a first fit gives the scale; the priors then pull what the data cannot
        # tell apart (C during a stable phase) toward the study's (or the corpus's) value.
        free = solve_grid(basis, theta, y, y, nonneg=(False, True, True))
        sigma2 = float(max(free.sigma2[free.best], 1e-10))
        if study is not None:
            mean = study.coef
            sd = study.coef_sd + np.abs(study.coef) * np.array([0.01, 0.1, 0.2]) + 1e-9
        else:
            a = max(float(free.coef[free.best][1]), 1e-6)
            mean = np.array([0.0, a, law.prior_anneal_ratio * a])
            sd = np.array([np.inf, np.inf, law.prior_anneal_ratio * a])
        precision = np.where(np.isfinite(sd), sigma2 / np.maximum(sd, 1e-12) ** 2, 0.0)
        fit = solve_grid(
            basis, theta, y, y, nonneg=(False, True, True), prior=Prior(mean, precision)
        )
        rng = np.random.default_rng(self.seed)
        pick, coef, noise_sd = fit.sample(rng, self.n_samples)
        noise = rng.standard_normal(self.n_samples) * noise_sd
        spread = _EXTRAPOLATION_SPREAD * float(np.sqrt(sigma2))
        if study is not None:
            spread = max(spread, _EXTRAPOLATION_SPREAD * 0.25 * study.sigma)
        extra = rng.standard_normal(self.n_samples) * spread
        observed = float(profile.s1(np.array([float(curve.last_step)]))[0] / units.area)
        return FittedLaw(
            self,
            curve,
            units,
            theta[pick],
            coef,
            noise,
            extra,
            observed,
            tuple(notes),
        )


@dataclass(frozen=True)
class AnnealingLawForecaster(_ScheduleLawForecaster):
    """L = L0 + A * S1^-alpha - C * S2 (Tissue et al. 2024), study-shared shape and C."""

    name: ClassVar[str] = "annealing_law"
    version: ClassVar[int] = 1


@dataclass(frozen=True)
class MultiPowerLawForecaster(_ScheduleLawForecaster):
    """L = L0 + A * S1^-alpha - B * LD (Luo et al. 2025), study-shared shape and B."""

    name: ClassVar[str] = "multi_power_law"
    version: ClassVar[int] = 1


def predict_from_study(
    study: StudyFit,
    profile: LrProfile,
    horizon: int,
    steps: FloatArray,
    n_samples: int = 400,
    seed: int = 0,
) -> FloatArray:
    """Samples (n_samples, len(steps)) of the loss of a new run of the study under profile,
    from the study fit alone: how a schedule is planned before any run of it exists."""
    law = LAWS[study.law]
    rng = np.random.default_rng(seed)
    coef = study.coef[None, :] + rng.standard_normal((n_samples, 3)) * study.coef_sd[None, :]
    coef[:, 1:] = np.maximum(coef[:, 1:], 0.0)
    theta = np.broadcast_to(study.theta, (n_samples, len(study.theta)))
    units = Units(profile.peak, float(horizon))
    mean = law.evaluate(profile, np.asarray(steps, dtype=np.float64), units, theta, coef)
    out: FloatArray = mean + rng.standard_normal(n_samples)[:, None] * study.sigma
    return out


def _old_multi_power_drop(
    profile: LrProfile, steps: FloatArray, c: float, beta: float, gamma: float
) -> FloatArray:
    s = np.asarray(steps, dtype=np.float64)
    k, d = profile.drops()
    if not len(k):
        return np.zeros_like(s)
    peak = profile.peak
    lr_k = np.maximum(profile.lr_at(k) / peak, 1e-3)
    area = np.maximum(profile.s1(s)[:, None] - profile.s1(k)[None, :], 0.0) / peak
    x = c * lr_k[None, :] ** -gamma * area
    return np.asarray(((d / peak) * -np.expm1(-beta * np.log1p(x))).sum(axis=1))
