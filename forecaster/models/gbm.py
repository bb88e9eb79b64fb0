"""LightGBM quantile models of where a curve ends, from features of its partial curve.

One booster per quantile level (features.LEVELS) predicts z = (final - level) / scale, the
scale-free change from the current level (models/features.py). Quantiles are sorted, so they
never cross; the path from now to the budget follows `features.path_weight`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from forecaster.curves import Curve, FloatArray
from forecaster.models import artifacts, features
from forecaster.models.base import StudyHistory
from forecaster.models.learned import fallback, quantile_prediction
from forecaster.models.prediction import Prediction

NAME = "gbm"
VERSION = 2
PARAMS: Mapping[str, Any] = MappingProxyType(
    {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "verbose": -1,
    }
)
ROUNDS = 300


@dataclass(frozen=True)
class GbmForecaster:
    """Quantile boosters over curve features; serves from an artifact."""

    boosters: tuple[Any, ...] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    n_samples: int = 200
    name: ClassVar[str] = NAME
    version: ClassVar[int] = VERSION

    def needs_history(self, curve: Curve) -> bool:
        return False

    def predict_z(self, x: FloatArray) -> FloatArray:
        """(n, len(LEVELS)) sorted quantiles of z for a (n, n_features) feature matrix."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.stack([b.predict(x, num_threads=1) for b in self.boosters], axis=1)
        return np.sort(out, axis=1)

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        why = features.usable(curve)
        if why is not None:
            return fallback(curve, self.name, self.version, why)
        f = features.extract(curve)
        z = self.predict_z(f.features[None, :])[0]
        return quantile_prediction(curve, f.frame, z, self.name, self.version, self.n_samples)

    def fit_many(self, curves: Sequence[Curve]) -> list[Prediction]:
        """fit() for many curves with one booster call per level: the batch path."""
        out: list[Prediction | None] = [None] * len(curves)
        ready = [(i, features.extract(c)) for i, c in enumerate(curves) if not features.usable(c)]
        if ready:
            z = self.predict_z(np.stack([f.features for _, f in ready]))
            for (i, f), zi in zip(ready, z, strict=True):
                out[i] = quantile_prediction(
                    curves[i], f.frame, zi, self.name, self.version, self.n_samples
                )
        return [p if p is not None else self.fit(c) for p, c in zip(out, curves, strict=True)]

    def files(self) -> dict[str, bytes]:
        return {
            f"q{int(round(level * 100)):02d}.txt": b.model_to_string().encode()
            for level, b in zip(features.LEVELS, self.boosters, strict=True)
        }


def train(
    x: FloatArray,
    z: FloatArray,
    weight: FloatArray,
    *,
    rounds: int = ROUNDS,
    threads: int = 2,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> GbmForecaster:
    """One quantile booster per level on (features, z) with example weights."""
    import lightgbm as lgb

    boosters = []
    for level in features.LEVELS:
        if progress:
            progress(f"gbm q{level:.2f}")
        params = {
            **PARAMS,
            "objective": "quantile",
            "alpha": level,
            "num_threads": threads,
            # The same trees for the same data, seed and threads (issue 16: reproducible).
            "deterministic": True,
            "force_row_wise": True,
            "seed": seed,
            "feature_pre_filter": False,
        }
        data = lgb.Dataset(x, label=z, weight=weight, feature_name=list(features.FEATURE_NAMES))
        boosters.append(lgb.train(params, data, num_boost_round=rounds))
    return GbmForecaster(tuple(boosters))


def load(folder: Path, bank: Any = None) -> GbmForecaster:
    """The gbm artifact under folder (ArtifactError when it is not this version or corrupt)."""
    import lightgbm as lgb

    art = artifacts.load(folder, NAME, VERSION)
    boosters = []
    for level in features.LEVELS:
        key = f"q{int(round(level * 100)):02d}.txt"
        if key not in art.files:
            raise artifacts.ArtifactError(f"artifact gbm at {art.path} lacks {key}.")
        try:
            boosters.append(lgb.Booster(model_str=art.files[key].decode()))
        except Exception as e:  # LightGBM raises its own error type on a bad model string
            raise artifacts.ArtifactError(
                f"artifact gbm at {art.path}: {key} is corrupt: {e}"
            ) from None
    if boosters[0].num_feature() != len(features.FEATURE_NAMES):
        raise artifacts.ArtifactError(
            f"artifact gbm at {art.path} reads {boosters[0].num_feature()} features; this code "
            f"makes {len(features.FEATURE_NAMES)} (version {VERSION}). Rebuild it."
        )
    return GbmForecaster(tuple(boosters), dict(art.meta))
