"""What the learned forecasters read off a partial curve, in one scale-free frame.

A curve at step t with budget H is put in a frame (level, scale): level is the smoothed
current value (loss view), scale a robust width of what was observed. Every learned model
predicts z = (final - level) / scale, so a cross-entropy of 4.0 and an accuracy of 0.9 look
alike, and one model serves every source. `Frame.unscale` turns z back into the metric.

The features (FEATURE_NAMES) are the progress, recent levels, slopes and curvature at several
scales of log-step, the noise level, a pow3 fit's forecast, the learning-rate schedule
where known, and the common hyper-parameters of the run's config where given.
`sequence_input` is the same curve resampled on a log-step grid for the torch model.
Predicted quantiles become a Prediction in `learned.quantile_prediction`, on paths that
`path_weight` draws from the current level to the horizon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from forecaster.curves import Curve, Direction, FloatArray, LrProfile, thin_indices

LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)  # the quantiles the models predict
Z_CLIP = 20.0  # |z| beyond this is a divergence, not a forecast; training clips to it
SEQ_LEN = 32  # points of the log-step grid the sequence model reads
_MIN_POINTS = 3
_PARAM_POINTS = 48  # pow3 is fitted on at most this many points (speed)

FEATURE_NAMES: tuple[str, ...] = (
    "progress",
    "log_remaining",  # log(H / t)
    "log_points",
    "is_max",
    "log_scale_rel",  # log(scale / |level|)
    "u_first",
    "u_best",
    "u_last",
    "drop_50",  # normalised drop per unit log-step over the newest 50% (in log-step) ...
    "drop_25",
    "drop_10",
    "curv_50_10",  # drop_10 - drop_50: is the curve flattening?
    "curv_50_25",
    "lin_extrap",  # the newest quarter's linear slope carried to H
    "loglin_extrap",  # drop_25 carried to H in log-step
    "noise",  # point-to-point scatter of the newest points, normalised
    "noise_rel",  # the same relative to |level|
    "pow3_at_h",  # a pow3 fit's forecast at H, normalised
    "pow3_asym",  # its asymptote
    "pow3_exp",  # its exponent
    "lr_known",
    "lr_now",  # lr at t / peak lr
    "lr_end",  # lr at H / peak lr
    "lr_mean_rest",  # mean lr over (t, H] / peak lr
    "s1_rest",  # share of the forward area S1 still to come
    "lr_drop_rest",  # (lr at t - lr at H) / peak lr: the annealing still to come
    # The run's config, where given: common hyper-parameters under their usual names
    # (CONFIG_KEYS); NaN when absent, which LightGBM and the sequence model's mask handle.
    "cfg_log_lr",
    "cfg_log_batch",
    "cfg_log_weight_decay",
    "cfg_momentum",
    "cfg_log_params",
    "cfg_log_depth",
    "cfg_log_width",
    "cfg_dropout",
)

# feature -> (config keys it is read from, first found wins; whether it is log10-scaled).
# Keys are matched case-insensitively, at the top level or one level down ({"hparams": {..}}).
CONFIG_KEYS: Mapping[str, tuple[tuple[str, ...], bool]] = MappingProxyType(
    {
        "cfg_log_lr": (("learning_rate", "lr", "peak_lr", "max_lr", "base_lr"), True),
        "cfg_log_batch": (
            ("batch_size", "global_batch_size", "train_batch_size", "per_device_train_batch_size"),
            True,
        ),
        "cfg_log_weight_decay": (("weight_decay", "wd", "l2"), True),
        "cfg_momentum": (("momentum", "beta1", "adam_beta1"), False),
        "cfg_log_params": (("num_params", "n_params", "parameters", "params", "size"), True),
        "cfg_log_depth": (("num_layers", "n_layer", "n_layers", "layers", "depth"), True),
        "cfg_log_width": (
            ("max_units", "n_embd", "model_dim", "hidden_size", "d_model", "width", "units"),
            True,
        ),
        "cfg_dropout": (("dropout", "max_dropout"), False),
    }
)
_SIZE_SUFFIX = MappingProxyType({"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12})


@dataclass(frozen=True)
class Frame:
    """The scale-free frame of a partial curve (loss view)."""

    level: float
    scale: float
    last_step: int
    horizon: int
    best_loss: float

    def scaled(self, loss: FloatArray | float) -> FloatArray:
        return np.asarray((np.asarray(loss, dtype=np.float64) - self.level) / self.scale)

    def unscale(self, z: FloatArray | float) -> FloatArray:
        return np.asarray(self.level + np.asarray(z, dtype=np.float64) * self.scale)


@dataclass(frozen=True)
class CurveFeatures:
    """A partial curve, ready for any learned model."""

    frame: Frame
    features: FloatArray  # (len(FEATURE_NAMES),), NaN where unknown
    sequence: FloatArray  # (SEQ_LEN, 3): log-step position, normalised value, lr / peak
    profile: LrProfile | None


def usable(curve: Curve) -> str | None:
    """Why the learned models cannot read this curve (None when they can)."""
    finite = np.isfinite(curve.values)
    if not finite.any() or not finite[-1]:
        return "the run diverged (its last value is not finite)"
    if int(finite.sum()) < _MIN_POINTS:
        return f"only {int(finite.sum())} finite points (< {_MIN_POINTS})"
    if curve.max_step is None or curve.max_step <= curve.last_step:
        return "no budget beyond the last step (max_step), so no horizon to forecast"
    return None


def frame_of(steps: FloatArray, loss: FloatArray, horizon: int) -> Frame:
    """Level: median of the newest points; scale: the observed 5-95% width, at least 3x the
    noise and 0.1% of the level, so z stays finite on a flat curve."""
    k = max(1, min(5, len(loss) // 8))
    level = float(np.median(loss[-k:]))
    lo, hi = np.quantile(loss, [0.05, 0.95])
    noise = _noise(loss)
    scale = max(float(hi - lo), 3.0 * noise, 1e-3 * abs(level), 1e-12)
    return Frame(level, scale, int(steps[-1]), int(horizon), float(loss.min()))


def _noise(loss: FloatArray) -> float:
    recent = loss[-20:]
    if len(recent) < 3:
        return 0.0
    # Second differences cancel a trend; their sd is sqrt(6) times the point noise.
    return float(np.std(np.diff(recent, 2)) / math.sqrt(6.0))


def extract(curve: Curve) -> CurveFeatures:
    """Features of a curve that `usable` accepts."""
    finite = curve.loss_view().finite()
    steps = finite.steps.astype(np.float64)
    loss = finite.values
    horizon = int(curve.max_step or curve.last_step)
    frame = frame_of(steps, loss, horizon)
    u = frame.scaled(loss)
    t = max(float(steps[-1]), 1.0)
    x = np.log(np.maximum(steps, 1.0) / t)  # <= 0, 0 at the newest point
    smooth = _smoothed(u)
    log_rem = math.log(max(horizon, 1) / t)
    drops = {}
    for frac in (0.5, 0.25, 0.1):
        span = max(frac * (0.0 - x[0]), 1e-6) if x[0] < 0 else 0.0
        if span <= 0:
            drops[frac] = math.nan
            continue
        ref = float(np.interp(-span, x, smooth))
        drops[frac] = (ref - smooth[-1]) / span
    quarter = max(2, len(u) // 4)
    ls, lu = steps[-quarter:], smooth[-quarter:]
    lin = float(np.polyfit(ls - ls[-1], lu, 1)[0]) if np.ptp(ls) > 0 else 0.0
    noise = _noise(loss)
    pow3 = _pow3(steps, loss, horizon, frame)
    lr_feats, profile = _lr_features(curve, int(steps[-1]), horizon)
    feats = [
        t / max(horizon, 1),
        log_rem,
        math.log(len(u)),
        1.0 if curve.direction is Direction.MAX else 0.0,
        math.log(frame.scale / max(abs(frame.level), 1e-12)),
        float(u[0]),
        float(u.min()),
        float(u[-1]),
        drops[0.5],
        drops[0.25],
        drops[0.1],
        drops[0.1] - drops[0.5],
        drops[0.25] - drops[0.5],
        float(np.clip(lin * (horizon - t), -Z_CLIP, Z_CLIP)),
        float(np.clip(-drops[0.25] * log_rem, -Z_CLIP, Z_CLIP))
        if math.isfinite(drops[0.25])
        else math.nan,
        noise / frame.scale,
        math.log(max(noise, 1e-12) / max(abs(frame.level), 1e-12)),
        *pow3,
        *lr_feats,
        *config_features(curve.config),
    ]
    return CurveFeatures(
        frame,
        np.asarray(feats, dtype=np.float64),
        _sequence(x, u, finite, profile),
        profile,
    )


def _smoothed(u: FloatArray) -> FloatArray:
    """A centred running median over 5 points (spikes do not set a slope)."""
    if len(u) < 5:
        return u
    pad = np.pad(u, 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, 5)
    return np.asarray(np.median(windows, axis=1))


def _pow3(steps: FloatArray, loss: FloatArray, horizon: int, frame: Frame) -> list[float]:
    from forecaster.models.power_law import FAMILIES

    if len(loss) < 5:
        return [math.nan, math.nan, math.nan]
    idx = thin_indices(len(loss), _PARAM_POINTS)
    offset = 1.0 if steps[0] == 0 else 0.0
    x = (steps[idx] + offset) / (steps[-1] + offset)
    family = FAMILIES["pow3"]
    with np.errstate(all="ignore"):
        fit = family.fit(x, loss[idx], np.ones(len(idx)))
        best = fit.best
        at_h = float(
            (
                family.basis(
                    fit.theta[best : best + 1],
                    np.array([(horizon + offset) / (steps[-1] + offset)]),
                )
                @ fit.coef[best]
            )[0, 0]
        )
    asym = float(fit.coef[best][0])
    vals = [float(frame.scaled(at_h)), float(frame.scaled(asym)), float(fit.theta[best][0])]
    return [float(np.clip(v, -Z_CLIP, Z_CLIP)) if math.isfinite(v) else math.nan for v in vals]


def _lr_features(curve: Curve, t: int, horizon: int) -> tuple[list[float], LrProfile | None]:
    profile = LrProfile.of(curve, horizon)
    if profile is None or profile.peak <= 0:
        return [0.0, math.nan, math.nan, math.nan, math.nan, math.nan], None
    peak = profile.peak
    now, end = (float(v) / peak for v in profile.lr_at([t, horizon]))
    s1_t, s1_h = (float(v) for v in profile.s1([t, horizon]))
    rest = max(horizon - t, 1)
    mean_rest = (s1_h - s1_t) / rest / peak
    share = (s1_h - s1_t) / s1_h if s1_h > 0 else math.nan
    return [1.0, now, end, mean_rest, share, now - end], profile


def config_features(config: Mapping[str, Any] | None) -> list[float]:
    """The CONFIG_KEYS features of a run's config (NaN for each one it does not give)."""
    flat: dict[str, Any] = {}
    for value in (config or {}).values():
        if isinstance(value, Mapping):
            for inner, v in value.items():
                flat.setdefault(str(inner).lower(), v)
    for key, value in (config or {}).items():  # the top level wins over a nested key
        flat[str(key).lower()] = value
    out = []
    for keys, log in CONFIG_KEYS.values():
        found = math.nan
        for key in keys:
            v = _number(flat.get(key))
            if math.isfinite(v) and (not log or v > 0):
                found = math.log10(v) if log else v
                break
        out.append(found)
    return out


def _number(value: Any) -> float:
    """A config value as a number: 3e-4, "3e-4", "1.4b", "7B" (NaN when it is none)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        scale = _SIZE_SUFFIX.get(text[-1:], 1.0) if text else 1.0
        try:
            return float(text[:-1] if scale != 1.0 else text) * scale
        except ValueError:
            return math.nan
    return math.nan


def _sequence(x: FloatArray, u: FloatArray, finite: Curve, profile: LrProfile | None) -> FloatArray:
    """SEQ_LEN points evenly spaced in log-step from the first to the newest point."""
    grid = np.linspace(x[0], 0.0, SEQ_LEN) if x[0] < 0 else np.zeros(SEQ_LEN)
    values = np.interp(grid, x, np.clip(u, -Z_CLIP, Z_CLIP))
    lr = np.zeros(SEQ_LEN)
    if profile is not None:
        t = max(float(finite.steps[-1]), 1.0)
        lr = profile.lr_at(np.exp(grid) * t) / profile.peak
    return np.stack([grid / max(-x[0], 1e-6) if x[0] < 0 else grid, values, lr], axis=1)


def path_weight(frame: Frame, steps: FloatArray) -> FloatArray:
    """How much of the change to the horizon has happened by each step: 0 at the newest
    point, 1 at the horizon, linear in log-step (flat beyond the horizon)."""
    t = max(float(frame.last_step), 1.0)
    h = max(float(frame.horizon), t + 1.0)
    s = np.clip(np.asarray(steps, dtype=np.float64), t, h)
    return np.asarray(np.log(s / t) / math.log(h / t))
