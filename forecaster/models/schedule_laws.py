"""What the two LR-schedule laws share: the joint fit on a study's runs, its uncertainty, and
the forecast of one run (its planned schedule, its own prefix, the study's fit).

A law is L(s) = L0 + A * S1(s)^-alpha - K * D(s; shape), in absolute units as the papers
define them: S1 the sum of the lr over steps (warm-up included, as the multi-power law's
S1 + S_W), D the annealing term (S2 of Tissue et al. 2024 with its decay time; the loss drop
of Luo et al. 2025 with its c, beta, gamma). `annealing_law.py` and `multi_power_law.py` each
define their D; the areas themselves live in `curves.LrProfile`.

Across peak lrs. On lr_scheduling_llm and nanogpt_speedrun (benchmarks/schedule_laws.py,
docs/benchmarks.md) the shape (alpha, the annealing shape) transfers across the runs of a
study, the annealing coefficient as a power of the peak lr (K * (peak lr / ref)^-delta, delta
about 0.7: a decay from twice the lr drops the loss by about 1.2 times as much, not twice),
while L0 and A move with the peak lr: a study is fitted with one (L0, A) per peak lr and
everything else shared, delta held by a prior where the study cannot pin it. Runs of one peak
lr therefore share every parameter, which is the papers' setting. A peak lr with two or more
completed runs also gets a fit of its own (`StudyFit.own`), and a run is forecast with
whichever of the two is the surer of its end (`StudyFit.spread`): the own fit where its runs
pin the shape, the shared one where they are few or unlike.

Fit as the papers do: every logged point after the warm-up (thinned evenly past
`Law.max_points` per run), a robust loss (Huber on the relative residual, about the log
loss, its threshold 1.345 robust sd of the residuals, the textbook 95%-efficiency constant),
several starts, `scipy.optimize.least_squares`. Parameter uncertainty is the fit's: the
Gauss-Newton covariance plus its cluster-robust (by run) sandwich, since points of one run are
not independent; forecasts carry it by the delta method.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from forecaster.curves import (
    Curve,
    Direction,
    FloatArray,
    LrProfile,
    LrSchedule,
    level_noise,
    thin_indices,
)
from forecaster.models.base import StudyHistory
from forecaster.models.baselines import constant_prediction, unfit_prediction
from forecaster.models.power_law import PowerLawForecaster
from forecaster.models.prediction import Prediction

_SAME_LR = 0.02  # peak lrs within 2% (in log) are one group: logging rounds them
_HUBER = 1.345  # Huber threshold in robust sd: 95% efficiency under normal noise
_MIN_RUN_POINTS = 4
_MAX_HISTORY_RUNS = 24  # a study fit uses at most this many completed runs (the newest)
_LR_EXPONENT = 2.0  # bound on |delta| in K_eff = K * (peak lr / ref)^-delta
# The prior on delta (mean, sd), there because a study rarely pins it (one peak lr, or the
# decays all at one peak lr). Fitted free on every task of lr_scheduling_llm with two or more
# peak lrs (24 runs each), delta came out 0.52-0.78; their precision-weighted mean is 0.71
# (0.64-0.74 leaving out any one task). The sd, 0.15, is the spread of the four estimates
# pinned to 0.13 or better (0.63-0.99, nanogpt_speedrun's track 2 included), and on the
# service path of nanogpt_speedrun, the source the mean does not come from (20 runs a task,
# cutoff 0.3, multi-power law), it beats a tighter prior: 0.73% mean relative error of the
# final loss against 0.93% with sd 0.05. benchmarks/schedule_laws.py has both sources' figures.
_DELTA_PRIOR = (0.7, 0.15)
# A peak lr with this many completed runs gets a fit of its own (the fewest that pin the
# law's shape: one run of a schedule leaves the annealing term and the power law confounded).
_MIN_GROUP_RUNS = 2


@dataclass(frozen=True)
class Law:
    """One schedule law: its annealing term and the shape parameters that define it.

    power(s1, alpha) is shared; anneal(prep, shape[1:]) is the law's own term, computed on
    what prepare(profile, steps, ref) precomputed for one run (lr in units of ref).
    """

    name: str
    shape_names: tuple[str, ...]  # the first is alpha
    anneal_name: str
    starts: tuple[tuple[float, ...], ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_points: int  # per run, in a fit
    prepare: Callable[[LrProfile, FloatArray, float], Any] = field(repr=False)
    anneal: Callable[[Any, FloatArray], FloatArray] = field(repr=False)
    s1_of: Callable[[Any], FloatArray] = field(repr=False)
    # shape as fitted (e.g. log10 tau) -> as reported in absolute units
    report: Callable[[FloatArray, float], dict[str, float]] = field(repr=False)
    # anneal with its derivatives by shape[1:] ((n,), (n, len(shape) - 1)), where the law
    # has them in closed form; None: the fit differentiates anneal numerically
    anneal_grad: Callable[[Any, FloatArray], tuple[FloatArray, FloatArray]] | None = field(
        default=None, repr=False
    )


def law_named(name: str) -> Law:
    """The law registered under name (annealing_law, multi_power_law)."""
    if name == "annealing_law":
        from forecaster.models.annealing_law import ANNEALING_LAW

        return ANNEALING_LAW
    if name == "multi_power_law":
        from forecaster.models.multi_power_law import MULTI_POWER_LAW

        return MULTI_POWER_LAW
    raise KeyError(name)


LAW_NAMES = ("annealing_law", "multi_power_law")


def fit_points(curve: Curve) -> tuple[FloatArray, FloatArray]:
    """Steps and losses a law is fitted on: finite, past the warm-up ramp (from the first
    step at half the peak lr on), with some lr applied."""
    loss = curve.loss_view().finite()
    steps = loss.steps.astype(np.float64)
    keep = (steps > 0) & (loss.values > 0)
    profile = LrProfile.of(curve)
    if profile is not None:
        warm = float(profile.knots[int(np.argmax(profile.values >= 0.5 * profile.peak))])
        keep &= (steps >= warm) & (profile.s1(steps) > 0)
    return steps[keep], loss.values[keep]


def _groups(peaks: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """Distinct peak lrs (within _SAME_LR in log) and each run's group index."""
    order = np.argsort(peaks)
    centers: list[float] = []
    members: list[list[int]] = []
    for i in order:
        if centers and abs(math.log(peaks[i] / centers[-1])) <= _SAME_LR:
            members[-1].append(int(i))
        else:
            centers.append(float(peaks[i]))
            members.append([int(i)])
    index = np.zeros(len(peaks), dtype=np.int64)
    out = np.empty(len(members))
    for g, m in enumerate(members):
        index[m] = g
        out[g] = float(np.exp(np.mean(np.log(peaks[m]))))
    return out, index


def group_of(peaks: FloatArray, peak: float) -> tuple[int, bool]:
    """The group nearest peak (in log), and whether it is the same peak lr."""
    dist = np.abs(np.log(peaks / peak))
    g = int(np.argmin(dist))
    return g, bool(dist[g] <= _SAME_LR)


@dataclass(frozen=True)
class Sharing:
    """What the runs of different peak lrs share: L0 and A each shared or one per peak lr,
    and whether the annealing coefficient scales as a power of the peak lr
    (K_eff = K * (peak lr / ref)^-delta, delta fitted with the prior _DELTA_PRIOR; without
    it delta = 0). The shape (alpha, the annealing shape) is always shared. Runs of one peak
    lr share everything, as in the papers."""

    l0_per_lr: bool = True
    a_per_lr: bool = True
    lr_exponent: bool = True


DEFAULT_SHARING = Sharing()


@dataclass(frozen=True)
class _Runs:
    """The fitted runs, concatenated: what the residuals are computed on."""

    preps: list[Any]
    y: FloatArray
    group: np.ndarray  # per point
    run: np.ndarray  # per point
    n_groups: int
    log_s1: FloatArray
    log_peak: FloatArray  # per point: log(peak lr / ref)


@dataclass(frozen=True)
class StudyFit:
    """A law fitted jointly on runs; parameters with their covariance.

    params = [law shape..., delta, K, L0_1..L0_G, A_1..A_G] in units of lr / ref (delta the
    lr exponent of K; an L0 or A shared across peak lrs is the first of its block, the others
    unused).
    """

    law: str
    ref: float  # lr unit of the fit
    peaks: FloatArray  # (G,) peak lr of each group
    sharing: Sharing
    params: FloatArray
    cov: FloatArray
    sigma: float  # relative residual sd
    offset_sd: float  # relative sd of a run's mean offset from its group's law
    n_runs: int
    n_points: int
    fit_s: float = 0.0
    # One per peak lr group: the law fitted on that group's runs alone (every parameter
    # theirs), where the group has _MIN_GROUP_RUNS completed runs; None elsewhere.
    own: tuple[StudyFit | None, ...] = ()

    def for_peak(self, peak: float) -> StudyFit:
        """The fit a run at peak lr is forecast with: its peak lr's own fit where the study
        ran that peak lr often enough, the study's shared fit otherwise."""
        if not self.own:
            return self
        g, same = group_of(self.peaks, peak)
        mine = self.own[g] if same else None
        return mine if mine is not None else self

    @property
    def d(self) -> int:
        """Shape parameters: the law's, then delta."""
        return len(law_named(self.law).shape_names) + 1

    @property
    def shape(self) -> FloatArray:
        return self.params[: self.d]

    def _coef_index(self, g: int) -> tuple[int, int]:
        n = len(self.peaks)
        base = self.d + 1
        return (
            base + (g if self.sharing.l0_per_lr else 0),
            base + n + (g if self.sharing.a_per_lr else 0),
        )

    def group_index(self, g: int) -> list[int]:
        """Indices into params of (shape..., delta, K, L0_g, A_g)."""
        return [*range(self.d + 1), *self._coef_index(g)]

    def parameters(self) -> list[tuple[str, float, float]]:
        """(name, value, sd) in absolute units (lr as given): the papers' parameters."""
        law = law_named(self.law)
        d = self.d
        sd = np.sqrt(np.maximum(np.diag(self.cov), 0.0))
        out: list[tuple[str, float, float]] = []
        shape = self.params[: d - 1]
        shown = law.report(shape, self.ref)
        for i, name in enumerate(law.shape_names):
            bumped = shape.copy()
            bumped[i] += sd[i]
            try:  # one shape parameter off by its sd, shown in its reported unit
                spread = abs(law.report(bumped, self.ref)[name] - shown[name])
            except OverflowError:  # an sd of many decades (a shape the runs do not pin)
                spread = math.inf
            out.append((name, shown[name], spread))
        several = len(self.peaks) > 1
        if several and self.sharing.lr_exponent:
            out.append((f"{law.anneal_name} lr exponent", float(self.params[d - 1]),
                        float(sd[d - 1])))  # fmt: skip
        alpha = float(self.params[0])
        k_scale = 1.0 / self.ref  # K per unit of absolute lr area (at the peak lr ref)
        out.append((law.anneal_name, float(self.params[d]) * k_scale, float(sd[d]) * k_scale))
        a_scale = self.ref**alpha  # A * (S1/ref)^-alpha = (A ref^alpha) S1^-alpha
        shown_l0: set[int] = set()
        shown_a: set[int] = set()
        for g, peak in enumerate(self.peaks):
            i, j = self._coef_index(g)
            if i not in shown_l0:
                tag = f" (peak lr {peak:.3g})" if several and self.sharing.l0_per_lr else ""
                out.append((f"L0{tag}", float(self.params[i]), float(sd[i])))
                shown_l0.add(i)
            if j not in shown_a:
                tag = f" (peak lr {peak:.3g})" if several and self.sharing.a_per_lr else ""
                out.append((f"A{tag}", float(self.params[j]) * a_scale, float(sd[j]) * a_scale))
                shown_a.add(j)
        return out

    def columns(self, profile: LrProfile, steps: FloatArray, shape: FloatArray) -> FloatArray:
        """(n, 2): S1^-alpha and the annealing term (times (peak / ref)^-delta) on profile."""
        law = law_named(self.law)
        prep = law.prepare(profile, steps, self.ref)
        s1 = np.maximum(law.s1_of(prep), 1e-12)
        scale = (profile.peak / self.ref) ** -float(shape[-1])
        return np.stack([s1 ** -float(shape[0]), scale * law.anneal(prep, shape[1:-1])], axis=1)

    def path(
        self,
        profile: LrProfile,
        steps: FloatArray,
        coef: tuple[float, float],
        coef_cov: FloatArray,
        n_samples: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Samples (n_samples, n) of the law on profile at steps with run coefficients
        (L0, A) ~ N(coef, coef_cov); shape and K from the study (delta method)."""
        mean, jac, cov = self._linearised(profile, steps, coef, coef_cov)
        draws = rng.multivariate_normal(np.zeros(len(cov)), cov, n_samples, method="eigh")
        noise = rng.standard_normal(n_samples) * self.sigma
        out: FloatArray = mean[None, :] * (1.0 + noise[:, None]) + draws @ jac.T
        return out

    def spread(
        self, profile: LrProfile, step: float, coef: tuple[float, float], coef_cov: FloatArray
    ) -> float:
        """The predictive sd of the run's loss at step (parameters and residual noise, by the
        delta method, as `path` samples it)."""
        mean, jac, cov = self._linearised(profile, np.array([float(step)]), coef, coef_cov)
        var = float(jac[0] @ cov @ jac[0]) + (self.sigma * float(mean[0])) ** 2
        return math.sqrt(max(var, 0.0))

    def _linearised(
        self, profile: LrProfile, steps: FloatArray, coef: tuple[float, float], coef_cov: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The law's mean at steps, its Jacobian in (shape..., K, L0, A) and their
        covariance."""
        d = self.d
        steps = np.asarray(steps, dtype=np.float64)
        shape = self.params[:d]
        k = float(self.params[d])
        l0, a = coef
        base = self.columns(profile, steps, shape)
        mean = l0 + a * base[:, 0] - k * base[:, 1]
        jac = np.empty((len(steps), d + 3))
        for i in range(d):
            step = 1e-4 * max(1.0, abs(float(shape[i])))
            bumped = shape.copy()
            bumped[i] += step
            cols = self.columns(profile, steps, bumped)
            jac[:, i] = (a * (cols[:, 0] - base[:, 0]) - k * (cols[:, 1] - base[:, 1])) / step
        jac[:, d] = -base[:, 1]
        jac[:, d + 1] = 1.0
        jac[:, d + 2] = base[:, 0]
        cov = np.zeros((d + 3, d + 3))
        cov[: d + 1, : d + 1] = self.cov[: d + 1, : d + 1]
        cov[d + 1 :, d + 1 :] = coef_cov
        return mean, jac, _psd(cov)

    def linear_part(
        self, profile: LrProfile, steps: FloatArray, y: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """A run's points as the law's linear part sees them: the S1^-alpha column and the
        loss with the annealing term added back, so that z = L0 + A * column for the run's own
        (L0, A)."""
        cols = self.columns(profile, steps, self.shape)
        z: FloatArray = y + float(self.params[self.d]) * cols[:, 1]
        return cols[:, 0], z

    def _prior(self, peak: float) -> tuple[FloatArray, FloatArray, bool]:
        """(L0, A) of a new run at peak lr before any of it ran, their covariance, and whether
        the study ran that peak lr (if not: the nearest one's, with the groups' spread, A
        rescaled so that its power-law term at a step is the nearest one's)."""
        g, same = group_of(self.peaks, peak)
        idx = list(self._coef_index(g))
        mean = self.params[idx].astype(np.float64)
        cov = self.cov[np.ix_(idx, idx)].copy()
        cov[0, 0] += (self.offset_sd * mean[0]) ** 2
        if not same:
            cov += np.diag(self._group_spread() ** 2)
            # The nearest peak lr's power-law term at the same step, not at the same lr area:
            # A * S1^-alpha with S1 in proportion to the peak lr. From 30% of the runs at a
            # peak lr no completed run used, this took the final loss's mean relative error
            # from 1.98% to 0.58% on lr_scheduling_llm (8 runs, multi-power law;
            # benchmarks/schedule_laws.py's service path, where the "new peak lr" rows of the
            # transfer show the same).
            scale = (peak / float(self.peaks[g])) ** float(self.params[0])
            mean[1] *= scale
            cov[1, :] *= scale
            cov[:, 1] *= scale
        return mean, cov, same

    def predict(
        self, profile: LrProfile, steps: FloatArray, n_samples: int = 400, seed: int = 0
    ) -> FloatArray:
        """Samples (n_samples, n) of a new run of the study under profile, before any of it
        ran."""
        steps = np.asarray(steps, dtype=np.float64)
        mine = self.for_peak(profile.peak)
        if mine is not self and len(steps):  # as for a running run: the surer at the end
            horizon = float(steps.max())
            spreads = []
            for fit in (self, mine):
                mean, cov, _ = fit._prior(profile.peak)
                spreads.append(fit.spread(profile, horizon, (float(mean[0]), float(mean[1])), cov))
            if spreads[1] < spreads[0]:
                return mine.predict(profile, steps, n_samples, seed)
        mean, cov, _ = self._prior(profile.peak)
        coef = (float(mean[0]), float(mean[1]))
        return self.path(profile, steps, coef, cov, n_samples, np.random.default_rng(seed))

    def _group_spread(self) -> FloatArray:
        """sd of (L0, A) across peak lrs (a new peak lr's uncertainty); 5% / 30% with one."""
        n = len(self.peaks)
        base = self.d + 1
        l0 = self.params[base : base + n] if self.sharing.l0_per_lr else self.params[base:][:1]
        a = self.params[base + n : base + 2 * n] if self.sharing.a_per_lr else np.zeros(1)
        s0 = float(np.std(l0, ddof=1)) if len(l0) > 1 else 0.05 * abs(float(l0[0]))
        a0 = float(self.params[base + n])
        s1 = float(np.std(a, ddof=1)) if len(a) > 1 else 0.3 * abs(a0)
        return np.array(
            [s0 if self.sharing.l0_per_lr else 0.0, s1 if self.sharing.a_per_lr else 0.0]
        )

    def run_coefficients(
        self, profile: LrProfile, steps: FloatArray, y: FloatArray
    ) -> tuple[tuple[float, float], FloatArray, bool]:
        """(L0, A) of a running run from its own prefix, with the study's fit of its peak lr
        as the prior (the nearest peak lr's, widened, when the study never ran it): the mean,
        the covariance and whether the peak lr was in the study.

        The prefix moves L0 alone, a random intercept (the run's seed and data order; at a
        new peak lr also the level its lr holds the loss at): a prefix cannot tell L0 from A,
        and a free (L0, A) fitted to it forecast the new peak lrs of lr_scheduling_llm 4 times
        worse than the nearest peak lr's A with the prefix's L0 (1.0% against 4.0% mean
        relative error of the final loss from 30%, benchmarks/schedule_laws.py).
        """
        prior, prior_cov, same = self._prior(profile.peak)
        if not len(y):
            return (float(prior[0]), float(prior[1])), prior_cov, same
        # The offset is read off the newest half of the prefix: the law misses a run's first
        # steps most, and the newest points are nearest the steps forecast (newest half
        # against all points: 1.19% against 1.46% on nanogpt_speedrun, 0.56% against 0.55%
        # on lr_scheduling_llm, mean relative error of the final loss from 30%, multi-power
        # law).
        newest = slice(len(y) // 2, None)
        steps, y = steps[newest], y[newest]
        power, z = self.linear_part(profile, steps, y)
        # Points of one run are correlated: count them as the effective number of a series
        # whose residuals are this study's (one per 10 points, at least 1).
        noise = (self.sigma * float(np.mean(y))) ** 2 * max(1.0, len(y) / 10.0) / len(y)
        # The study ran this peak lr: its law holds but for the run's own offset. It did not:
        # the offset is all the nearest peak lr's L0 is unsure of (the groups' spread).
        shift_var = (self.offset_sd * float(prior[0])) ** 2 if same else float(prior_cov[0, 0])
        gap = float(np.mean(z - prior[0] - prior[1] * power))
        gain = shift_var / (shift_var + noise)
        cov = prior_cov.copy()
        cov[0, 0] -= gain * shift_var
        return (float(prior[0]) + gain * gap, float(prior[1])), _psd(cov), same


def _psd(m: FloatArray) -> FloatArray:
    """m made symmetric positive semi-definite (negative eigenvalues of round-off cut)."""
    m = 0.5 * (m + m.T)
    w, v = np.linalg.eigh(m)
    out: FloatArray = (v * np.maximum(w, 0.0)) @ v.T
    return out


# A study fit reads only the newest this many curves of a history.
HISTORY_RUNS = _MAX_HISTORY_RUNS


def _study_run(c: Curve) -> tuple[LrProfile, FloatArray, FloatArray] | None:
    """A completed run as a study fit uses it (its lr profile and fit points), or None when
    the fit leaves it out: no lr, not a loss, fewer than _MIN_RUN_POINTS points past the
    warm-up. The one test of which runs a study fit reads (`fit_study`, `used_by_study_fit`)."""
    profile = LrProfile.of(c)
    if profile is None or c.direction is not Direction.MIN:
        return None
    steps, y = fit_points(c)
    if len(y) < _MIN_RUN_POINTS:
        return None
    return profile, steps, y


def used_by_study_fit(curve: Curve) -> bool:
    """Whether fit_study reads this curve (among the newest HISTORY_RUNS of its history): two
    histories whose newest HISTORY_RUNS curves have the same ones it reads, in the same order,
    get the same study fits, and so the same forecasts (judging.HistoryHolder shares them)."""
    return _study_run(curve) is not None


def _study_runs(
    law: Law, curves: tuple[Curve, ...]
) -> tuple[list[LrProfile], list, list, list[Curve]]:
    kept: list[Curve] = []
    profiles: list[LrProfile] = []
    steps_l: list[FloatArray] = []
    y_l: list[FloatArray] = []
    for c in curves[-_MAX_HISTORY_RUNS:]:
        used = _study_run(c)
        if used is None:
            continue
        profile, steps, y = used
        idx = thin_indices(len(y), law.max_points)
        kept.append(c)
        profiles.append(profile)
        steps_l.append(steps[idx])
        y_l.append(y[idx])
    return profiles, steps_l, y_l, kept


def fit_study(
    law_name: str,
    curves: tuple[Curve, ...],
    sharing: Sharing = DEFAULT_SHARING,
    start: FloatArray | None = None,
    ref: float | None = None,
) -> StudyFit | None:
    """The law fitted jointly on curves that have an lr (a loss, lower is better); None when
    none has 4 usable points. start: the parameters to start from (of a fit of one peak lr, in
    units of ref), instead of the law's several starts; ref: the lr unit (default: the
    largest peak lr)."""
    t0 = time.perf_counter()
    law = law_named(law_name)
    profiles, steps_l, y_l, kept = _study_runs(law, curves)
    if not profiles:
        return None
    ref = ref or max(p.peak for p in profiles)
    peaks_run = np.array([p.peak for p in profiles])
    peaks, run_group = _groups(peaks_run)
    preps = [law.prepare(p, s, ref) for p, s in zip(profiles, steps_l, strict=True)]
    sizes = [len(y) for y in y_l]
    s1 = np.concatenate([np.maximum(law.s1_of(p), 1e-12) for p in preps])
    runs = _Runs(
        preps,
        np.concatenate(y_l),
        np.repeat(run_group, sizes),
        np.repeat(np.arange(len(sizes)), sizes),
        len(peaks),
        np.log(s1),
        np.repeat(np.log(peaks_run / ref), sizes),
    )
    params, cov, sigma, offset_sd = _solve(law, runs, sharing, start)
    own: tuple[StudyFit | None, ...] = ()
    if len(peaks) > 1:
        # Each from the shared fit's parameters of its peak lr: one descent, not several.
        d = len(law.shape_names) + 1
        own = tuple(
            fit_study(
                law_name,
                tuple(c for c, k in zip(kept, run_group, strict=True) if k == g),
                start=params[
                    [
                        *range(d + 1),
                        d + 1 + (g if sharing.l0_per_lr else 0),
                        d + 1 + len(peaks) + (g if sharing.a_per_lr else 0),
                    ]
                ],
                ref=ref,
            )
            if int(np.sum(run_group == g)) >= _MIN_GROUP_RUNS
            else None
            for g in range(len(peaks))
        )
    return StudyFit(
        law_name, ref, peaks, sharing, params, cov, sigma, offset_sd, len(sizes), len(runs.y),
        time.perf_counter() - t0, own,
    )  # fmt: skip


def _anneal_all(law: Law, runs: _Runs, rest: FloatArray) -> FloatArray:
    """The annealing column of every point; rest = the law's shape after alpha, then delta."""
    raw = np.concatenate([law.anneal(p, rest[:-1]) for p in runs.preps])
    out: FloatArray = raw * np.exp(-float(rest[-1]) * runs.log_peak)
    return out


def _anneal_all_grad(law: Law, runs: _Runs, rest: FloatArray) -> tuple[FloatArray, FloatArray]:
    """_anneal_all and its derivatives by rest (the shape after alpha, then delta), from the
    law's closed form: the columns of a fit's Jacobian."""
    assert law.anneal_grad is not None
    parts = [law.anneal_grad(p, rest[:-1]) for p in runs.preps]
    scale = np.exp(-float(rest[-1]) * runs.log_peak)
    raw = np.concatenate([v for v, _ in parts])
    grad = np.concatenate([g for _, g in parts]) * scale[:, None]
    out: FloatArray = raw * scale
    return out, np.column_stack([grad, -runs.log_peak * out])


def _solve(
    law: Law, runs: _Runs, sharing: Sharing, start: FloatArray | None = None
) -> tuple[FloatArray, FloatArray, float, float]:
    from scipy.optimize import least_squares

    d = len(law.shape_names) + 1
    g = runs.n_groups
    y = runs.y
    rows = np.arange(len(y))
    n_params = d + 1 + 2 * g
    li = d + 1 + (runs.group if sharing.l0_per_lr else 0 * runs.group)  # each point's L0
    ai = d + 1 + g + (runs.group if sharing.a_per_lr else 0 * runs.group)  # and A
    free = np.zeros(n_params, dtype=bool)
    free[: d - 1] = True
    free[d - 1] = sharing.lr_exponent
    free[d] = True
    free[np.unique(li)] = True
    free[np.unique(ai)] = True
    full_lo = np.array([*law.lower, -_LR_EXPONENT, 0.0] + [-np.inf] * g + [0.0] * g)
    full_hi = np.array([*law.upper, _LR_EXPONENT] + [np.inf] * (1 + 2 * g))

    def embed(x: FloatArray) -> FloatArray:
        p = np.zeros(n_params)
        p[free] = x
        return p

    kept: dict[bytes, FloatArray] = {}

    def anneal_at(rest: FloatArray) -> FloatArray:
        """_anneal_all, remembered for the last shapes: least_squares asks for the residual
        and then the Jacobian at the same point, and both need the annealing column."""
        key = rest.tobytes()
        if key not in kept:
            if len(kept) > 8:
                kept.clear()
            kept[key] = _anneal_all(law, runs, rest)
        return kept[key]

    def predict(p: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        power = np.exp(-p[0] * runs.log_s1)
        anneal = anneal_at(p[1:d])
        return p[li] + p[ai] * power - p[d] * anneal, power, anneal

    prior_w = 0.0  # the prior row's weight: set once the residuals' scale is known

    def residual(x: FloatArray) -> FloatArray:
        p = embed(x)
        out: FloatArray = predict(p)[0] / y - 1.0
        if sharing.lr_exponent:
            out = np.append(out, prior_w * (p[d - 1] - _DELTA_PRIOR[0]) / _DELTA_PRIOR[1])
        return out

    def jacobian_full(p: FloatArray) -> FloatArray:
        pred, power, anneal = predict(p)
        jac = np.zeros((len(y), n_params))
        jac[:, 0] = -p[ai] * runs.log_s1 * power
        if law.anneal_grad is not None:
            jac[:, 1:d] = -p[d] * _anneal_all_grad(law, runs, p[1:d])[1]
        else:  # by finite differences
            for i in range(1, d):
                if not free[i]:
                    continue
                step = 1e-5 * max(1.0, abs(float(p[i])))
                bumped = p[1:d].copy()
                bumped[i - 1] += step
                jac[:, i] = -p[d] * (anneal_at(bumped) - anneal) / step
        jac[:, d] = -anneal
        jac[rows, li] = 1.0
        jac[rows, ai] = power
        out: FloatArray = jac / y[:, None]
        return out

    def jacobian(x: FloatArray) -> FloatArray:
        jac = jacobian_full(embed(x))
        if sharing.lr_exponent:
            row = np.zeros((1, n_params))
            row[0, d - 1] = prior_w / _DELTA_PRIOR[1]
            jac = np.vstack([jac, row])
        return jac[:, free]

    lo, hi = full_lo[free], full_hi[free]
    starts = []
    if start is not None and runs.n_groups == 1 and len(start) == n_params:
        x0 = np.clip(np.asarray(start, dtype=np.float64)[free], lo + 1e-12, hi - 1e-12)
        starts.append((float(np.sum(residual(x0) ** 2)), x0))
    for shape in law.starts if not starts else ():
        p0 = np.zeros(n_params)
        p0[: d - 1] = shape
        p0[d - 1] = _DELTA_PRIOR[0] if sharing.lr_exponent else 0.0
        p0[d:] = _linear_init(law, runs, p0[:d], li, ai, n_params - d)
        x0 = np.clip(p0[free], lo + 1e-12, hi - 1e-12)
        starts.append((float(np.sum(residual(x0) ** 2)), x0))
    starts.sort(key=lambda t: t[0])
    best = None
    scale0 = max(1.4826 * float(np.median(np.abs(residual(starts[0][1])))), 1e-5)
    prior_w = scale0
    for _, x0 in starts[:3]:
        res = least_squares(
            residual, x0, jac=jacobian, bounds=(lo, hi), loss="huber",
            f_scale=_HUBER * scale0, x_scale="jac", max_nfev=200,
        )  # fmt: skip
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    # Once more from the best, with the threshold (and the prior's row) set by its own
    # residuals: the prior's row is then (delta - mean) / sd in units of the residuals' sd.
    sd = max(1.4826 * float(np.median(np.abs(best.fun))), 1e-6)
    prior_w = sd
    best = least_squares(
        residual, best.x, jac=jacobian, bounds=(lo, hi), loss="huber", f_scale=_HUBER * sd,
        x_scale="jac", max_nfev=100,
    )  # fmt: skip
    x = best.x
    r = best.fun
    sd = max(1.4826 * float(np.median(np.abs(r))), 1e-6)
    weight = np.minimum(1.0, _HUBER * sd / np.maximum(np.abs(r), 1e-300))
    jac = jacobian(x)
    jw = jac * np.sqrt(weight)[:, None]
    hess_inv = np.linalg.pinv(jw.T @ jw)  # the prior's row included: it bounds delta's sd
    n = len(y)  # the data's rows (the prior's, when there is one, comes after)
    dof = max(n - len(x), 1)
    sigma2 = float(np.sum(weight[:n] * r[:n] ** 2) / dof)
    cov_free = sigma2 * hess_inv
    n_runs = int(runs.run.max()) + 1
    if n_runs > 1:  # cluster-robust (by run): a run's residuals move together
        score = np.zeros((n_runs, len(x)))
        np.add.at(score, runs.run, jac[:n] * (weight[:n] * r[:n])[:, None])
        meat = score.T @ score * n_runs / (n_runs - 1)
        cov_free = cov_free + hess_inv @ meat @ hess_inv
    cov = np.zeros((n_params, n_params))
    cov[np.ix_(free, free)] = _psd(cov_free)
    offsets = np.bincount(runs.run, weights=r[:n]) / np.bincount(runs.run)
    offset_sd = float(np.sqrt(np.mean(offsets**2))) if n_runs > 1 else sd
    return embed(x), cov, math.sqrt(sigma2), offset_sd


def _linear_init(
    law: Law, runs: _Runs, shape: FloatArray, li: np.ndarray, ai: np.ndarray, n_coef: int
) -> FloatArray:
    """(K, L0..., A...) by least squares at a fixed shape (the start of a nonlinear fit)."""
    power = np.exp(-shape[0] * runs.log_s1)
    anneal = _anneal_all(law, runs, shape[1:])
    d = len(shape)
    x = np.zeros((len(runs.y), n_coef))
    rows = np.arange(len(runs.y))
    x[:, 0] = -anneal
    x[rows, li - d] = 1.0
    x[rows, ai - d] = power
    w = 1.0 / runs.y
    coef, *_ = np.linalg.lstsq(x * w[:, None], runs.y * w, rcond=None)
    coef[0] = max(coef[0], 0.0)
    g = runs.n_groups
    coef[1 + g :] = np.maximum(coef[1 + g :], 1e-9)
    return np.asarray(coef, dtype=np.float64)


def _decay_ahead(profile: LrProfile, curve: Curve) -> bool:
    """Whether the lr falls (by more than rounding) between the newest step and the horizon."""
    ahead = np.linspace(float(curve.last_step), float(curve.horizon), 64)
    lr = profile.lr_at(ahead)
    return bool(lr.min() < 0.99 * float(profile.lr_at([float(curve.last_step)])[0]))


def _fits_newest(prediction: Prediction, curve: Curve) -> bool:
    """Whether the law's fit runs through the curve's newest 20% of points: its median
    residual there within 3 standard errors of a level (`curves.level_noise`, the curve's own
    noise). Only a law that misses them is checked out of sample (the costly part)."""
    loss = curve.loss_view().finite()
    n = len(loss)
    if n < _MIN_CHECK_POINTS:
        return True
    n_hold = max(2, int(round(_CHECK_FRACTION * n)))
    steps = loss.steps[n - n_hold :].astype(np.float64)
    median = np.median(prediction.sampler(steps[:: max(1, n_hold // 16)]), axis=0)
    resid = loss.values[n - n_hold :][:: max(1, n_hold // 16)] - median
    bias = abs(float(np.median(resid)))
    noise = level_noise(loss.values, len(resid))  # the standard error of their median
    return bias <= 3.0 * max(noise, 1e-12 * (1.0 + abs(float(loss.values[-1]))))


def _own_noise(
    study: StudyFit, profile: LrProfile, steps: FloatArray, y: FloatArray, coef: tuple[float, float]
) -> float:
    """A run's relative residual sd about the study's law with its own (L0, A): robust (MAD),
    0 below 8 points."""
    if len(y) < 8:
        return 0.0
    cols = study.columns(profile, steps, study.shape)
    mean = coef[0] + coef[1] * cols[:, 0] - float(study.params[study.d]) * cols[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = y / mean - 1.0
    rel = rel[np.isfinite(rel)]
    if not len(rel):
        return 0.0
    return 1.4826 * float(np.median(np.abs(rel - np.median(rel))))


def _learns(study: StudyFit, profile: LrProfile, steps: FloatArray, y: FloatArray) -> bool:
    """Whether the run's loss falls with its lr area as the study's law says a loss does:
    (L0, A) fitted freely to its points, at the study's shape, give A > 0. A run that blew
    up and sits at a high loss gives A <= 0, and no (L0, A) of the law can describe it."""
    power, z = study.linear_part(profile, steps, y)
    x = np.stack([np.ones(len(y)), power], axis=1)
    coef, *_ = np.linalg.lstsq(x, z, rcond=None)
    return bool(coef[1] > 0)


def _run_fit(
    study: StudyFit, profile: LrProfile, steps: FloatArray, y: FloatArray
) -> tuple[StudyFit, tuple[float, float], FloatArray, bool]:
    """The study's fit adjusted to a running run: (the fit, with the run's own noise where it
    is noisier than the study's; the run's (L0, A), their covariance; whether the study ran
    its peak lr)."""
    coef, cov, same = study.run_coefficients(profile, steps, y)
    own = _own_noise(study, profile, steps, y, coef)
    if own > study.sigma:  # a noisier run than the study's: its own noise widens it
        study = replace(study, sigma=own)
        coef, cov, same = study.run_coefficients(profile, steps, y)
    return study, coef, cov, same


@dataclass(frozen=True)
class FittedRun:
    """A run's law: the study's (or its own) fit with the run's (L0, A)."""

    study: StudyFit
    coef: tuple[float, float]
    coef_cov: FloatArray

    def prediction(
        self,
        profile: LrProfile,
        curve: Curve,
        model: str,
        version: int,
        n_samples: int,
        seed: int,
        notes: tuple[str, ...],
    ) -> Prediction:
        """The predictive distribution of the run's loss under profile."""
        study, coef, coef_cov = self.study, self.coef, self.coef_cov

        def sampler(steps: FloatArray) -> FloatArray:
            rng = np.random.default_rng(seed)
            return study.path(profile, np.asarray(steps, dtype=np.float64), coef, coef_cov,
                              n_samples, rng)  # fmt: skip

        return Prediction(
            model,
            version,
            curve.direction,
            sampler,
            curve.last_step,
            curve.loss_view().best_value(),
            converged=True,
            notes=notes,
        )


def schedule_known(curve: Curve) -> bool:
    """Whether the schedule laws apply: the metric is a loss and its lr is known to the budget
    (otherwise they answer with the power-law ensemble)."""
    return curve.direction is Direction.MIN and LrProfile.of(curve, curve.horizon) is not None


_MIN_POINTS_ALONE = 5  # a run with no completed run in its study needs this many points
# A law is checked against the power-law ensemble on the newest 20% of a curve's points (fitted
# without them), from this many points on (the ensemble's own hold-out weighting starts there).
_MIN_CHECK_POINTS = 8
_CHECK_FRACTION = 0.2


@dataclass(frozen=True)
class ScheduleLawForecaster:
    """A schedule law as a forecaster: the study's fit (cached on the history) with the run's
    own (L0, A) from its prefix; a run of a new study is fitted alone."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 2
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
        prediction = fitted[0].prediction(
            profile, curve, self.name, self.version, self.n_samples, self.seed, fitted[1]
        )
        if _decay_ahead(profile, curve) or _fits_newest(prediction, curve):
            return prediction
        worse = self._worse_than_power_law(curve, history)
        if worse is None:
            return prediction
        fallback = PowerLawForecaster(name=self.name, seed=self.seed).fit(curve)
        return replace(fallback, model_version=self.version, notes=(worse, *fallback.notes))

    def _worse_than_power_law(self, curve: Curve, history: StudyHistory | None) -> str | None:
        """Why the law is not used for this curve (its forecast of the newest points, fitted
        without them, is worse than the power-law ensemble's: a noisy or erratic run the law
        does not describe), or None when it does at least as well. Asked only when no decay
        of the lr lies ahead: a decay to come is what the law knows and the ensemble cannot,
        and the newest points, before it, cannot show that."""
        finite = curve.finite()
        n = len(finite)
        if n < _MIN_CHECK_POINTS:
            return None
        n_hold = max(2, int(round(_CHECK_FRACTION * n)))
        head = finite.head(n - n_hold)
        hold_steps = finite.steps[n - n_hold :].astype(np.float64)
        truth = finite.loss_view().values[n - n_hold :]
        law = self.fit_law(head, history)
        if isinstance(law, Prediction):
            return None
        profile = LrProfile.of(head, head.horizon)
        assert profile is not None
        law_pred = law[0].prediction(profile, head, self.name, self.version, 100, self.seed, ())
        power = PowerLawForecaster(n_samples=100, seed=self.seed).fit(head)
        errors = []
        for prediction in (law_pred, power):
            median = np.median(prediction.sampler(hold_steps), axis=0)
            errors.append(float(np.mean(np.abs(median - truth))))
        if not errors[0] > errors[1]:
            return None
        return (
            f"the {self.name}'s forecast of the newest {n_hold} points (fitted without them) is "
            f"off by {errors[0]:.3g} on average, the power-law ensemble's by {errors[1]:.3g}: "
            "the power-law ensemble answered for this curve."
        )

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
        changed = profile.with_plan_after(schedule, start, horizon)
        return fitted[0].prediction(
            changed, curve, self.name, self.version, self.n_samples, self.seed, fitted[1]
        )

    def fit_law(
        self, curve: Curve, history: StudyHistory | None
    ) -> tuple[FittedRun, tuple[str, ...]] | Prediction:
        """The run's fitted law and its notes, or a fallback Prediction that says why there
        is none."""
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
        law = law_named(self.name)
        study = (
            history.fits.get(self.name, lambda: fit_study(self.name, history.curves))
            if history and history.curves
            else None
        )
        steps, y = fit_points(curve)
        idx = thin_indices(len(y), law.max_points)
        steps, y = steps[idx], y[idx]
        if study is not None:
            shared_runs = study.n_runs
            mine = study.for_peak(profile.peak)
            fits = (study,) if mine is study else (study, mine)
            candidates = [_run_fit(fit, profile, steps, y) for fit in fits]
            # The peak lr's own fit where it forecasts this run's end more surely than the
            # shared one (a group of few or unlike runs pins its own shape poorly).
            study, coef, cov, same = min(
                candidates, key=lambda c: c[0].spread(profile, curve.horizon, c[1], c[2])
            )
            if len(y) >= _MIN_CHECK_POINTS and not _learns(study, profile, steps, y):
                note = (
                    "this run's loss does not fall as its lr area grows (a free L0 and A "
                    f"fitted to its {len(y)} points give A <= 0: diverged, or not learning): "
                    f"the {self.name} does not describe it; this is the power-law ensemble."
                )
                flat = PowerLawForecaster(name=self.name, seed=self.seed).fit(curve)
                return replace(flat, model_version=self.version, notes=(note, *flat.notes))
            if study.n_runs < shared_runs:  # its peak lr's own fit
                notes = [f"the law fitted on the {study.n_runs} completed runs of this peak lr"]
            else:
                notes = [f"shape and annealing term shared with {study.n_runs} completed runs"]
            notes.append(
                "; L0 and A of their peak lr, adjusted to this run's points."
                if same
                else "; no completed run at this peak lr: A of the nearest one (its power-law "
                "term at the same step), L0 from this run's points."
            )
            return FittedRun(study, coef, cov), ("".join(notes),)
        if len(y) < _MIN_POINTS_ALONE:
            note = (
                f"only {len(y)} usable points past the warm-up and no completed run in the "
                "study: this is the power-law ensemble (the short-curve law below 5 points)."
            )
            short = PowerLawForecaster(name=self.name, seed=self.seed).fit(curve)
            return replace(short, model_version=self.version, notes=(note, *short.notes))
        alone = fit_study(self.name, (curve.finite(),))
        if alone is None:
            return constant_prediction(curve, self.name, self.version, self.n_samples, 0, None)
        last = alone.group_index(0)[-2:]
        coef = (float(alone.params[last[0]]), float(alone.params[last[1]]))
        note = (
            "no completed run in the study: the law is fitted on this run alone, so its "
            "annealing term is known only once the lr has decayed."
        )
        return FittedRun(alone, coef, alone.cov[np.ix_(last, last)]), (note,)
