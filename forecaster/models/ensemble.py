"""The stacked ensemble of every kind of forecaster: the learned ones (gbm, sequence), the
power-law ensemble and pow3 alone, and the schedule-aware laws (annealing_law,
multi_power_law) fitted with the study's completed runs; combined per progress bucket, with
split-conformal intervals.

Stacking: each member's quantiles of z (models/features.py) are averaged level by level
(quantile averaging), with weights chosen on calibration tasks (tasks neither the members nor
anything else trained on) to minimise the pinball loss, each task's relative to its own
scale (a smooth task counts as much as a noisy one). Weights and intervals are chosen per
stratum and progress bucket: the strata are runs whose lr is known to the budget (a loss
with a planned or logged schedule: the schedule laws apply) and all others (the schedule
laws would only repeat the power law, so their weight is zero).

Out of source: the weights and deltas are chosen on calibration tasks of the sources the
members trained on, where the learned members are at their best; on a source nobody trained on
they may be trusted too much (leave-one-source-out, the bank trained without lcbench forecast
its runs worse than the power law alone). A served forecast can therefore be blended, level by
level, with the power-law member: (1 - b) * stacked + b * power law, b = OUT_OF_SOURCE_BLEND.
benchmarks/ensemble_blend.py chooses b leave-one-source-out and tests that choice with each
source left out of it too; the share chosen on every source (0.75) helped only the sources it
was chosen on (lcbench, pythia_evals) and did worse elsewhere than no blend, so b is 0
(docs/benchmarks.md, section ensemble_blend). Training's held-out metrics are of the stack.

Calibration: conformalised quantile regression (Romano, Patterson & Candes, NeurIPS 2019),
normalised by the interval's width: on the calibration tasks, the score of an example is how
far the truth lies outside its stacked 50% (or 90%) interval, in units of that interval's
width; each interval is widened (or narrowed) by the score's (1 - alpha)(1 + 1/n) quantile of
its progress bucket. Examples are weighted so that each source counts the same, so the
intervals hold on a new task of any source rather than on the most logged one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from forecaster.curves import Curve, FloatArray
from forecaster.models import artifacts, features
from forecaster.models.base import StudyHistory
from forecaster.models.learned import fallback, quantile_prediction
from forecaster.models.prediction import Prediction

NAME = "ensemble"
VERSION = 2
MEMBERS = ("gbm", "sequence", "power_law", "pow3", "annealing_law", "multi_power_law")
PARAMETRIC_MEMBERS = MEMBERS[2:]  # fitted per forecast (parametric_z)
_POWER_LAW = MEMBERS.index("power_law")
SCHEDULE_MEMBERS = ("annealing_law", "multi_power_law")  # weight 0 unless the lr is known
STRATA = ("no_schedule", "schedule")
BUCKETS = (0.0, 0.15, 0.25, 0.4, 0.7, 1.01)  # progress (last step / budget) edges
INTERVALS = ((1, 3, 0.5), (0, 4, 0.9))  # (lower index, upper index, nominal) in LEVELS
_MIN_BUCKET = 40  # fewer calibration examples than this: the bucket uses the global figures
_GRID_STEP = 0.1
# The power-law member's share of a served forecast (see the module doc): 0, because the share
# benchmarks/ensemble_blend.py chooses leave-one-source-out does worse, on the sources left out
# of its choice, than none.
OUT_OF_SOURCE_BLEND = 0.0


def bucket_of(progress: float | FloatArray) -> Any:
    return np.clip(np.searchsorted(BUCKETS, progress, side="right") - 1, 0, len(BUCKETS) - 2)


def pinball(zq: FloatArray, truth: FloatArray) -> FloatArray:
    """Mean pinball loss over LEVELS per example: zq (n, L), truth (n,)."""
    levels = np.asarray(features.LEVELS)
    diff = truth[:, None] - zq
    return np.asarray(np.maximum(levels * diff, (levels - 1) * diff).mean(axis=1))


def stack(member_z: FloatArray, weights: FloatArray) -> FloatArray:
    """(n, K, L) member quantiles, (n, K) or (K,) weights -> (n, L) stacked quantiles."""
    w = np.broadcast_to(weights, member_z.shape[:2])
    return np.asarray(np.einsum("nk,nkl->nl", w, np.sort(member_z, axis=2)))


def calibrate(zq: FloatArray, deltas: FloatArray) -> FloatArray:
    """Widens each interval of INTERVALS by its delta (n, len(INTERVALS)) times its width."""
    out = np.sort(zq, axis=1).copy()
    mid = out[:, len(features.LEVELS) // 2]
    for j, (lo, hi, _) in enumerate(INTERVALS):
        width = np.maximum(out[:, hi] - out[:, lo], 1e-9)
        out[:, lo] = np.minimum(out[:, lo] - deltas[:, j] * width, mid)
        out[:, hi] = np.maximum(out[:, hi] + deltas[:, j] * width, mid)
    return np.sort(out, axis=1)


def _weighted_quantile(x: FloatArray, w: FloatArray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cw, q * cw[-1]), len(x) - 1)])


@dataclass(frozen=True)
class EnsembleFit:
    """What training chooses: member weights and conformal deltas per stratum and bucket."""

    weights: FloatArray  # (len(STRATA), n_buckets, K)
    deltas: FloatArray  # (len(STRATA), n_buckets, len(INTERVALS))

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "deltas": self.deltas.tolist(),
            "members": list(MEMBERS),
            "strata": list(STRATA),
            "buckets": list(BUCKETS),
        }


def fit_stack(
    member_z: FloatArray,
    truth: FloatArray,
    progress: FloatArray,
    weight: FloatArray,
    stratum: FloatArray,
    group: npt.NDArray[Any] | None = None,
) -> EnsembleFit:
    """Chooses weights (pinball loss) and then conformal deltas, per stratum and progress
    bucket, on calibration examples: member_z (n, K, L), truth / progress / weight /
    stratum (n,). A cell with fewer than _MIN_BUCKET examples takes its stratum's figures,
    and a stratum with too few takes the figures of all examples.

    group (n,), e.g. the task: for choosing weights, each example's loss is divided by its
    group's mean loss under equal member weights, so that a smooth task (small errors in z)
    counts as much as a noisy one: the stack minimises relative, not absolute, error."""
    k = member_z.shape[1]
    choose_w = np.asarray(weight, dtype=np.float64)
    if group is not None:
        equal = pinball(stack(member_z, np.full(k, 1.0 / k)), truth)
        for g in np.unique(group):
            in_g = group == g
            choose_w = np.where(in_g, choose_w / max(float(equal[in_g].mean()), 1e-9), choose_w)
    grid = np.array(
        [
            c
            for c in itertools.product(np.arange(0, 1 + 1e-9, _GRID_STEP), repeat=k)
            if abs(sum(c) - 1) < 1e-6
        ]
    )
    schedule_cols = [MEMBERS.index(m) for m in SCHEDULE_MEMBERS]
    plain_grid = grid[(grid[:, schedule_cols] == 0).all(axis=1)]
    buckets = bucket_of(progress)
    n_b = len(BUCKETS) - 1
    stratum = np.asarray(stratum, dtype=int)

    def best_weights(mask: FloatArray, s: int) -> FloatArray:
        candidates = grid if s else plain_grid
        losses = [
            np.average(pinball(stack(member_z[mask], g), truth[mask]), weights=choose_w[mask])
            for g in candidates
        ]
        return np.asarray(candidates[int(np.argmin(losses))])

    def per_cell(fit_one: Any, everything: Any) -> FloatArray:
        out = []
        for s in range(len(STRATA)):
            in_s = stratum == s
            whole = fit_one(in_s, s) if in_s.sum() >= _MIN_BUCKET else everything
            out.append(
                [
                    fit_one(in_s & (buckets == b), s)
                    if (in_s & (buckets == b)).sum() >= _MIN_BUCKET
                    else whole
                    for b in range(n_b)
                ]
            )
        return np.asarray(out, dtype=np.float64)

    all_examples = np.ones(len(truth), dtype=bool)
    weights = per_cell(best_weights, best_weights(all_examples, 0))
    stacked = stack(member_z, weights[stratum, buckets])

    def deltas_for(mask: FloatArray, _: int = 0) -> list[float]:
        out = []
        n = int(mask.sum())
        for lo, hi, nominal in INTERVALS:
            width = np.maximum(stacked[mask, hi] - stacked[mask, lo], 1e-9)
            score = np.maximum(stacked[mask, lo] - truth[mask], truth[mask] - stacked[mask, hi])
            level = min(nominal * (1 + 1 / max(n, 1)), 1.0)
            out.append(max(_weighted_quantile(score / width, weight[mask], level), -0.45))
        return out

    deltas = per_cell(deltas_for, deltas_for(all_examples))
    return EnsembleFit(weights, deltas)


def member_quantiles(
    gbm: Any,
    sequence: Any,
    x: FloatArray,
    seq: FloatArray,
    budget_query: FloatArray,
    parametric: FloatArray,
) -> FloatArray:
    """(n, K, L) members' quantiles of z at the budget, batched: what training stacks and
    what a forecast stacks. budget_query: (n, 1, 2) query features of the budget;
    parametric: (n, len(PARAMETRIC_MEMBERS), L) their quantiles (parametric_z), any value
    where the member's weight is zero."""
    z_gbm = gbm.predict_z(x)
    z_seq = sequence.predict_z(seq, x, budget_query)[:, 0]
    z_par = np.sort(np.nan_to_num(parametric), axis=2)
    return np.concatenate([z_gbm[:, None], z_seq[:, None], z_par], axis=1)


@dataclass(frozen=True)
class EnsembleForecaster:
    """gbm, sequence and the parametric forecasters, stacked and conformally calibrated."""

    gbm: Any = field(repr=False)
    sequence: Any = field(repr=False)
    stacking: EnsembleFit = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    n_samples: int = 200
    blend: float = OUT_OF_SOURCE_BLEND  # the power law's share of a served forecast
    name: ClassVar[str] = NAME
    version: ClassVar[int] = VERSION

    def needs_history(self, curve: Curve) -> bool:
        from forecaster.models.annealing_law import schedule_known

        return schedule_known(curve)  # only the schedule laws read it

    def member_z(
        self,
        curve: Curve,
        f: features.CurveFeatures,
        weights: FloatArray,
        history: StudyHistory | None = None,
    ) -> FloatArray:
        """(K, L) member quantiles of z at the budget (the parametric members' only where
        they weigh)."""
        from forecaster.models.sequence import query_features

        q = query_features(f.frame, np.array([float(f.frame.horizon)]))[None]
        parametric = parametric_z(curve, f.frame, history, self.served_members(weights)[2:])
        return member_quantiles(
            self.gbm, self.sequence, f.features[None], f.sequence[None], q, parametric[None]
        )[0]

    def served_members(self, weights: FloatArray) -> npt.NDArray[np.bool_]:
        """The members a served forecast fits: those that weigh, and the power law it is
        blended with."""
        wanted = np.asarray(weights) > 0
        wanted[_POWER_LAW] |= self.blend > 0
        return wanted

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        from forecaster.models.annealing_law import schedule_known

        why = features.usable(curve)
        if why is not None:
            return fallback(curve, self.name, self.version, why)
        f = features.extract(curve)
        s, b = int(schedule_known(curve)), int(bucket_of(f.features[0]))
        w = self.stacking.weights[s, b]
        return self._prediction(curve, f, s, b, w, self.member_z(curve, f, w, history))

    def fit_many(self, curves: list[Curve]) -> list[Prediction]:
        """self.fit(curve) for curves that need no study history, the same forecasts with the
        per-curve work batched: gbm's trees over every curve at once (row by row, the same
        numbers), the power-law members through `batched.fit_many`. The sequence model stays
        one curve at a time: torch's batched float32 products round differently (~1e-6), and
        the batch must give the service's forecasts."""
        from forecaster import models
        from forecaster.models.annealing_law import schedule_known
        from forecaster.models.batched import fit_many
        from forecaster.models.power_law import PowerLawForecaster
        from forecaster.models.sequence import query_features

        out: list[Prediction | None] = [None] * len(curves)
        todo = []
        for i, curve in enumerate(curves):
            why = features.usable(curve)
            if why is not None:
                out[i] = fallback(curve, self.name, self.version, why)
                continue
            f = features.extract(curve)
            s, b = int(schedule_known(curve)), int(bucket_of(f.features[0]))
            todo.append((i, curve, f, s, b, self.stacking.weights[s, b]))
        if not todo:
            return [p for p in out if p is not None]
        fitted: list[dict[str, Prediction]] = [{} for _ in todo]
        for m, name in enumerate(PARAMETRIC_MEMBERS):
            member = models.create(name)
            wants = [
                k
                for k, t in enumerate(todo)
                if self.served_members(t[5])[2 + m] and name not in SCHEDULE_MEMBERS
            ]
            if wants and isinstance(member, PowerLawForecaster):
                for k, p in zip(wants, fit_many(member, [todo[k][1] for k in wants]), strict=True):
                    fitted[k][name] = p
        z_gbm = self.gbm.predict_z(np.stack([t[2].features for t in todo]))
        for k, (i, curve, f, s, b, w) in enumerate(todo):
            q = query_features(f.frame, np.array([float(f.frame.horizon)]))[None]
            z_seq = self.sequence.predict_z(f.sequence[None], f.features[None], q)[:, 0]
            parametric = parametric_z(curve, f.frame, None, self.served_members(w)[2:], fitted[k])
            z_par = np.sort(np.nan_to_num(parametric[None]), axis=2)
            members = np.concatenate([z_gbm[k : k + 1, None], z_seq[:, None], z_par], axis=1)[0]
            out[i] = self._prediction(curve, f, s, b, w, members)
        return [p for p in out if p is not None]

    def _prediction(
        self,
        curve: Curve,
        f: features.CurveFeatures,
        s: int,
        b: int,
        w: FloatArray,
        members: FloatArray,
    ) -> Prediction:
        """The stacked, calibrated forecast from the members' (K, L) quantiles of z, blended
        level by level with the power-law member's (self.blend)."""
        zq = stack(members[None], w)
        z = calibrate(zq, self.stacking.deltas[s, b][None])[0]
        mix = ", ".join(f"{m} {x:.0%}" for m, x in zip(MEMBERS, w, strict=True) if x > 0)
        if self.blend > 0:
            z = (1 - self.blend) * z + self.blend * np.sort(members[_POWER_LAW])
            mix += f"; blended {self.blend:.0%} with power_law alone (out of source)"
        return quantile_prediction(
            curve,
            f.frame,
            z,
            self.name,
            self.version,
            self.n_samples,
            notes=(f"ensemble: {mix}; intervals calibrated on held-out tasks.",),
        )

    def files(self) -> dict[str, bytes]:
        import json

        return {"stacking.json": json.dumps(self.stacking.to_json()).encode()}


def parametric_z(
    curve: Curve,
    frame: features.Frame,
    history: StudyHistory | None = None,
    wanted: Any = None,
    fitted: dict[str, Prediction] | None = None,
) -> FloatArray:
    """(len(PARAMETRIC_MEMBERS), L) quantiles of z at the budget of each parametric member
    (the schedule laws fitted with the study history); NaN for a member not wanted (a bool
    per member, default all), and for the schedule laws when the lr is not known (they
    would only repeat the power law). fitted: members' forecasts of this curve already made
    (fit_many's batches), used instead of fitting them again."""
    from forecaster import models
    from forecaster.models.annealing_law import schedule_known

    out = np.full((len(PARAMETRIC_MEMBERS), len(features.LEVELS)), np.nan)
    known = schedule_known(curve)
    for i, name in enumerate(PARAMETRIC_MEMBERS):
        schedule_law = name in SCHEDULE_MEMBERS
        if (wanted is not None and not wanted[i]) or (schedule_law and not known):
            continue
        prediction = (fitted or {}).get(name)
        if prediction is None:
            prediction = models.create(name).fit(curve, history if schedule_law else None)
        samples = prediction.samples([frame.horizon])[:, 0]
        samples = samples[np.isfinite(samples)]
        if not len(samples):
            out[i] = 0.0  # no finite forecast: the current level
            continue
        z = np.clip(frame.scaled(samples * curve.direction.sign), -features.Z_CLIP, features.Z_CLIP)
        out[i] = np.quantile(z, features.LEVELS)
    return out


def load(folder: Path, bank: Any = None) -> EnsembleForecaster:
    """The ensemble artifact; its members must be loaded in bank, at the versions it names."""
    import json

    art = artifacts.load(folder, NAME, VERSION)
    try:
        spec = json.loads(art.files["stacking.json"])
        stacking = EnsembleFit(
            np.asarray(spec["weights"], float), np.asarray(spec["deltas"], float)
        )
        if spec["members"] != list(MEMBERS) or stacking.weights.shape != (
            len(STRATA),
            len(BUCKETS) - 1,
            len(MEMBERS),
        ):
            raise ValueError(f"members {spec['members']} or shape {stacking.weights.shape}")
    except (KeyError, ValueError, TypeError) as e:
        raise artifacts.ArtifactError(f"artifact ensemble at {art.path} is corrupt: {e}") from None
    members = {}
    for name in ("gbm", "sequence"):
        model = None if bank is None else bank.get(name)
        wanted = int(art.meta.get("member_versions", {}).get(name, -1))
        if model is None or model.version != wanted:
            have = "none" if model is None else f"version {model.version}"
            raise artifacts.ArtifactError(
                f"artifact ensemble at {art.path} stacks {name} version {wanted}; the loaded "
                f"{name} is {have}. Train them together with `forecaster train`."
            )
        if model.meta.get("corpus_fingerprint") != art.fingerprint:
            raise artifacts.ArtifactError(
                f"artifact ensemble at {art.path} was calibrated on corpus "
                f"{art.fingerprint[:12]}, but {name} comes from "
                f"{str(model.meta.get('corpus_fingerprint'))[:12]}; train them together."
            )
        members[name] = model
    return EnsembleForecaster(members["gbm"], members["sequence"], stacking, dict(art.meta))
