"""Conformal calibration of any forecaster's intervals on scale-free residuals.

The intervals a forecaster draws from its own fit (or that the ensemble learned on the
corpus's sources) are too narrow on runs of a kind nobody tuned on. This layer rescales them by
the residuals the forecaster actually made on cut runs of the corpus, in a unit of the curve's
own, so that one table serves a cross-entropy of 4 and an accuracy of 0.9 alike:

    r = (truth - forecast median) / unit,
    unit = scale * sqrt(w90^2 + (DISTANCE_WEIGHT * log(s / t))^2),

scale being the learned models' frame scale of the observed curve (`features.frame_of`: the
observed 5-95% width, at least 3x its noise; no curve math is repeated here), w90 the width of
the forecaster's own 90% interval at the forecast step s in that scale, and log(s / t) the
extrapolation distance from the last observed step t: a forecaster sure of itself far out
still gets an interval that widens with the distance. Residuals are stratified by progress
(t / s) and by the number of points, never by source; each source weighs the same in a cell,
and every residual counts with its mirror image (symmetric intervals around the forecaster's
median: a bias learned on the sources seen is not carried over to a new one). A cell's
quantile at level a is the split-conformal one (level a(1 + 1/n) above the median), and across
progress the quantiles are made monotone with `IsotonicRegression` (less progress, wider),
then interpolated in progress, zero at the last observed step.

The unit and the distance weight were chosen leave-one-source-out among a few candidates
(the frame scale alone, the forecaster's own width alone, with and without the distance term,
asymmetric or mirrored): this one had the smallest mean distance from 50% and 90% coverage on
sources left out of the table (docs/benchmarks.md, section calibration).

`fit_calibrated(forecaster, curve, history, bank)` is the one place a table is applied: the
engine's forecasts (judging.fit_forecast) and `forecaster eval` (evaluation/accuracy.py) both
go through it. It returns a new Prediction (dataclasses.replace with a new sampler), so
anything else a Prediction carries still applies. Without a table for the model (or with no
calibration loaded: `ModelBank.load("none")`) the prediction is returned as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from forecaster.curves import Curve, FloatArray
from forecaster.models import artifacts, features
from forecaster.models.learned import quantile_function
from forecaster.models.prediction import Prediction, sample_quantiles, within_bounds

if TYPE_CHECKING:
    from forecaster.models.artifacts import ModelBank

NAME = "calibration"
VERSION = 1
# The residual quantiles a table keeps (the policies read 5/25/50/75/95% and the forecast
# policy's incumbent_confidence, 97%; the tails beyond are extended linearly).
LEVELS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
PROGRESS_EDGES: tuple[float, ...] = (0.0, 0.15, 0.25, 0.4, 0.7, 1.0)  # t / s
POINT_EDGES: tuple[float, ...] = (0, 5, 10, 30, math.inf)  # points observed
MIN_CELL = 30  # residuals a cell needs; fewer: it takes its progress bin over every count
DISTANCE_WEIGHT = 0.3  # the extrapolation distance's share of the unit (see the module doc)


def unit_of(curve: Curve) -> tuple[float, int]:
    """The curve's own unit (the frame scale of its finite loss-view points) and the number of
    finite points; (nan, 0) when it has none."""
    finite = curve.loss_view().finite()
    if not len(finite):
        return math.nan, 0
    horizon = int(curve.max_step or curve.last_step)
    frame = features.frame_of(finite.steps.astype(np.float64), finite.values, horizon)
    return float(frame.scale), len(finite)


def unit_multiplier(w90: npt.ArrayLike, progress: npt.ArrayLike) -> FloatArray:
    """The unit in frame scales: the forecaster's own 90% width (in scales) and the
    extrapolation distance log(s / t) = -log(progress), in quadrature."""
    distance = -np.log(np.clip(np.asarray(progress, dtype=np.float64), 1e-12, 1.0))
    w = np.nan_to_num(np.asarray(w90, dtype=np.float64), nan=0.0, posinf=0.0)
    return np.asarray(np.sqrt(w**2 + (DISTANCE_WEIGHT * distance) ** 2))


def progress_of(last_step: float, at_steps: npt.ArrayLike) -> FloatArray:
    """t / s: the fraction of each forecast step already observed (1 at or before t)."""
    s = np.asarray(at_steps, dtype=np.float64)
    t = max(float(last_step), 1.0)
    return np.asarray(np.clip(t / np.maximum(s, t), 0.0, 1.0))


def point_bin(n_points: int) -> int:
    return int(
        np.clip(np.searchsorted(POINT_EDGES, n_points, side="right") - 1, 0, len(POINT_EDGES) - 2)
    )


def progress_bin(progress: FloatArray) -> npt.NDArray[np.int64]:
    b = np.searchsorted(PROGRESS_EDGES, progress, side="right") - 1
    return np.asarray(np.clip(b, 0, len(PROGRESS_EDGES) - 2), dtype=np.int64)


@dataclass(frozen=True)
class Residuals:
    """Scale-free residuals of one forecaster on cut runs: what a table is built from."""

    r: FloatArray  # (truth - median) / unit, loss view
    progress: FloatArray  # t / final step
    n_points: npt.NDArray[np.int64]
    source: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.r)

    def select(self, mask: npt.NDArray[np.bool_]) -> Residuals:
        return Residuals(self.r[mask], self.progress[mask], self.n_points[mask], self.source[mask])


def _conformal_levels(n: int) -> FloatArray:
    """Each level moved outwards by the split-conformal correction for n residuals."""
    levels = np.asarray(LEVELS)
    up = np.minimum(levels * (1 + 1 / max(n, 1)), 1.0)
    down = np.maximum(1.0 - (1.0 - levels) * (1 + 1 / max(n, 1)), 0.0)
    return np.where(levels > 0.5, up, np.where(levels < 0.5, down, levels))


def _cell_quantiles(res: Residuals) -> FloatArray:
    """The conformal quantiles of a cell's residuals and their mirror images, each source
    weighing the same."""
    _, inverse, counts = np.unique(res.source, return_inverse=True, return_counts=True)
    weights = np.tile(1.0 / counts[inverse], 2)
    both = np.concatenate([res.r, -res.r])
    q = np.quantile(both, _conformal_levels(len(res)), weights=weights, method="inverted_cdf")
    q[LEVELS.index(0.5)] = 0.0  # the mirrored residuals' median (an order statistic otherwise)
    return np.asarray(q)


@dataclass(frozen=True)
class Table:
    """One forecaster's residual quantiles by (points bin, progress bin).

    centres: (n_point_bins, n_progress_bins) the median progress of each cell's residuals, where
    its quantiles sit on the progress axis; q: (n_point_bins, n_progress_bins, len(LEVELS)).
    """

    q: FloatArray
    centres: FloatArray
    counts: npt.NDArray[np.int64]

    def quantiles(self, progress: FloatArray, n_points: int) -> FloatArray:
        """(len(progress), len(LEVELS)) residual quantiles, interpolated in progress, zero at
        progress 1 (the last observed step)."""
        b = point_bin(n_points)
        x = np.append(self.centres[b], 1.0)
        q = np.vstack([self.q[b], np.zeros(len(LEVELS))])
        p = np.clip(np.asarray(progress, dtype=np.float64), x[0], 1.0)
        return np.stack([np.interp(p, x, q[:, j]) for j in range(len(LEVELS))], axis=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "q": self.q.tolist(),
            "centres": self.centres.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Table:
        table = cls(
            np.asarray(d["q"], dtype=np.float64),
            np.asarray(d["centres"], dtype=np.float64),
            np.asarray(d["counts"], dtype=np.int64),
        )
        shape = (len(POINT_EDGES) - 1, len(PROGRESS_EDGES) - 1)
        if table.q.shape != (*shape, len(LEVELS)) or table.centres.shape != shape:
            raise ValueError(f"table of shape {table.q.shape}, expected {(*shape, len(LEVELS))}")
        return table


def fit_table(res: Residuals) -> Table:
    """The table of one forecaster's residuals. A cell with fewer than MIN_CELL residuals takes
    its progress bin over every number of points (or all residuals); then, per points bin and
    level, the quantiles are made monotone in progress (wider further out) by isotonic
    regression weighted by the cells' counts."""
    from sklearn.isotonic import IsotonicRegression

    if len(res) < MIN_CELL:
        raise ValueError(f"{len(res)} residuals: a table needs at least {MIN_CELL}.")
    n_b, n_p = len(POINT_EDGES) - 1, len(PROGRESS_EDGES) - 1
    pb = progress_bin(res.progress)
    nb = np.asarray([point_bin(int(n)) for n in res.n_points])
    everything = _cell_quantiles(res)
    q = np.zeros((n_b, n_p, len(LEVELS)))
    centres = np.zeros((n_b, n_p))
    counts = np.zeros((n_b, n_p), dtype=np.int64)
    for j in range(n_p):
        in_p = pb == j
        whole = _cell_quantiles(res.select(in_p)) if in_p.sum() >= MIN_CELL else everything
        mid = (PROGRESS_EDGES[j] + PROGRESS_EDGES[j + 1]) / 2
        whole_centre = float(np.median(res.progress[in_p])) if in_p.any() else mid
        for i in range(n_b):
            cell = in_p & (nb == i)
            counts[i, j] = int(cell.sum())
            if counts[i, j] >= MIN_CELL:
                q[i, j] = _cell_quantiles(res.select(cell))
                centres[i, j] = float(np.median(res.progress[cell]))
            else:
                q[i, j], centres[i, j] = whole, whole_centre
    for i in range(n_b):
        weight = np.maximum(counts[i], 1).astype(np.float64)
        for k, level in enumerate(LEVELS):
            if level == 0.5:
                continue
            iso = IsotonicRegression(increasing=level < 0.5)  # upper tails fall with progress
            q[i, :, k] = iso.fit_transform(centres[i], q[i, :, k], sample_weight=weight)
    return Table(np.sort(q, axis=2), centres, counts)


@dataclass(frozen=True)
class Calibration:
    """The tables of the calibrated forecasters, by registry name."""

    tables: Mapping[str, Table]
    meta: Mapping[str, Any] = field(default_factory=dict)
    name: str = NAME
    version: int = VERSION

    def files(self) -> dict[str, bytes]:
        body = {
            "levels": list(LEVELS),
            "progress_edges": list(PROGRESS_EDGES),
            "point_edges": [e if math.isfinite(e) else "inf" for e in POINT_EDGES],
            "tables": {name: t.to_json() for name, t in self.tables.items()},
        }
        return {"tables.json": json.dumps(body).encode()}


def build(residuals: Mapping[str, Residuals]) -> Calibration:
    """A table per forecaster that has enough residuals."""
    tables = {name: fit_table(res) for name, res in residuals.items() if len(res) >= MIN_CELL}
    return Calibration(tables)


def save(folder: str | Path, calibration: Calibration, meta: Mapping[str, Any]) -> Path:
    """Writes FOLDER/calibration/ (tables.json and meta.json)."""
    counts = {name: int(t.counts.sum()) for name, t in calibration.tables.items()}
    full = {**dict(meta), "models": sorted(calibration.tables), "residuals": counts}
    return artifacts.save(folder, NAME, VERSION, calibration.files(), full)


def load(folder: str | Path) -> Calibration:
    """FOLDER/calibration/, checked (ArtifactError when corrupt or of another version)."""
    art = artifacts.load(folder, NAME, VERSION)
    try:
        body = json.loads(art.files["tables.json"])
        if tuple(body["levels"]) != LEVELS or tuple(body["progress_edges"]) != PROGRESS_EDGES:
            raise ValueError("levels or progress edges differ from this code's")
        tables = {name: Table.from_json(t) for name, t in body["tables"].items()}
    except (KeyError, ValueError, TypeError) as e:
        raise artifacts.ArtifactError(
            f"artifact calibration at {art.path} is corrupt: {e}. Rebuild it with "
            "`forecaster calibrate`."
        ) from None
    return Calibration(tables, dict(art.meta))


def calibrated(prediction: Prediction, curve: Curve, calibration: Calibration | None) -> Prediction:
    """The prediction with its intervals replaced by the conformal ones of its model's table:
    at each step s, the model's median plus the curve's unit times the residual quantiles at
    progress t / s. Unchanged when there is no table for the model, no finite point to take a
    unit from, or the model forecasts no finite value (a divergence stays one)."""
    table = None if calibration is None else calibration.tables.get(prediction.model)
    if table is None:
        return prediction
    scale, n_points = unit_of(curve)
    if not (math.isfinite(scale) and scale > 0):
        return prediction
    raw_sampler = prediction.sampler
    last = prediction.observed_until
    levels = np.asarray(LEVELS)

    def sampler(steps: FloatArray) -> FloatArray:
        raw = np.asarray(raw_sampler(steps), dtype=np.float64)
        n = raw.shape[0]
        finite = np.isfinite(raw).mean(axis=0) >= 0.5
        if not finite.any():
            return raw
        with np.errstate(all="ignore"):
            kept = raw[:, finite]
            if np.isfinite(kept).all():  # the usual case: one sort (nanquantile's own result)
                q05, median, q95 = sample_quantiles(kept, (0.05, 0.5, 0.95)).T
            else:
                kept = np.where(np.isfinite(kept), kept, np.nan)
                q05, median, q95 = np.nanquantile(kept, (0.05, 0.5, 0.95), axis=0)
        progress = progress_of(last, np.asarray(steps, dtype=np.float64)[finite])
        unit = scale * unit_multiplier((q95 - q05) / scale, progress)
        rq = table.quantiles(progress, n_points)  # (n_finite_steps, L)
        u = (np.arange(n) + 0.5) / n  # the same uniforms at every step: paths, not noise
        offsets = quantile_function(rq, levels, u).T  # (n, n_finite_steps)
        out = raw.copy()
        out[:, finite] = median[None, :] + unit[None, :] * offsets
        return out

    note = (
        f"intervals: conformal on {prediction.model}'s scale-free residuals over "
        f"{int(table.counts.sum())} cut runs of the corpus (by progress and points, not source)."
    )
    return replace(prediction, sampler=sampler, notes=(*prediction.notes, note))


def served(prediction: Prediction, curve: Curve, bank: ModelBank | None) -> Prediction:
    """A fitted prediction as the service serves it: calibrated by the bank's tables (none: as
    it is), then bounded by the curve's metric kind (`prediction.within_bounds`)."""
    tables = None if bank is None else bank.calibration
    return within_bounds(calibrated(prediction, curve, tables), curve)


def fit_calibrated(
    forecaster: Any, curve: Curve, history: Any, bank: ModelBank | None
) -> Prediction:
    """forecaster.fit(curve, history), served (calibrated and bounded): how the engine
    (judging, ForecastCurve), the batch and `forecaster eval` all forecast."""
    prediction: Prediction = forecaster.fit(curve, history)
    return served(prediction, curve, bank)


def pinball_losses(r: FloatArray, q: FloatArray) -> dict[float, float]:
    """sklearn's mean pinball loss of quantiles q (n, L) of residuals r (n,), per level."""
    from sklearn.metrics import mean_pinball_loss

    return {
        level: float(mean_pinball_loss(r, q[:, k], alpha=level)) for k, level in enumerate(LEVELS)
    }


def as_residuals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Residuals]:
    """Rows (model, r in frame scales, raw_w90 the forecaster's own 90% width in frame scales,
    progress, n_points, source) grouped into Residuals (in units) by model."""
    out: dict[str, Residuals] = {}
    for model in sorted({str(row["model"]) for row in rows}):
        mine = [
            row
            for row in rows
            if row["model"] == model and math.isfinite(float(row["r"]))
            and unit_multiplier(row["raw_w90"], row["progress"]) > 0
        ]  # fmt: skip
        unit = unit_multiplier(
            [float(row["raw_w90"]) for row in mine], [float(row["progress"]) for row in mine]
        )
        out[model] = Residuals(
            np.asarray([float(row["r"]) for row in mine]) / unit,
            np.asarray([float(row["progress"]) for row in mine]),
            np.asarray([int(row["n_points"]) for row in mine], dtype=np.int64),
            np.asarray([str(row["source"]) for row in mine]),
        )
    return out
