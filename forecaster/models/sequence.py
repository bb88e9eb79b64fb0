"""A small GRU that reads a normalised partial curve and returns quantiles at query steps.

Input: the curve on a log-step grid (features.sequence_input: position, z-value, lr / peak
lr), the curve features (standardised, with a mask where unknown), and query steps as
(share of the way to the budget in log-step, log(step / last step)). Output: quantiles
(features.LEVELS) of z at each query, made monotone by construction (a base plus cumulative
softplus gaps). Like LC-PFN (Adriaensen et al., NeurIPS 2023) it is pre-trained on curves from
a prior (corpus/synthetic.py) and then fine-tuned on logged runs; it is small enough to serve
on one CPU core.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from forecaster.curves import Curve, FloatArray
from forecaster.models import artifacts, features
from forecaster.models.base import StudyHistory
from forecaster.models.learned import fallback, quantile_prediction
from forecaster.models.prediction import Prediction

NAME = "sequence"
VERSION = 2
HIDDEN = 64
N_FEATURES = len(features.FEATURE_NAMES)
N_LEVELS = len(features.LEVELS)


def build_net(hidden: int = HIDDEN) -> Any:
    """The network (torch is imported here, so the service imports it only when used)."""
    import torch
    from torch import nn

    class CurveNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("feat_mean", torch.zeros(N_FEATURES))
            self.register_buffer("feat_std", torch.ones(N_FEATURES))
            self.inp = nn.Linear(3, hidden)
            self.gru = nn.GRU(hidden, hidden, batch_first=True)
            self.feat = nn.Sequential(nn.Linear(2 * N_FEATURES, hidden), nn.GELU())
            self.head = nn.Sequential(
                nn.Linear(2 * hidden + 2, hidden),
                nn.GELU(),
                nn.Linear(hidden, hidden),
                nn.GELU(),
                nn.Linear(hidden, N_LEVELS),
            )

        def encode(self, seq: Any, feats: Any) -> Any:
            mask = torch.isfinite(feats)
            f = torch.where(mask, (feats - self.feat_mean) / self.feat_std, 0.0).clamp(-20, 20)
            _, h = self.gru(torch.tanh(self.inp(seq)))
            return torch.cat([h[-1], self.feat(torch.cat([f, mask.float()], dim=1))], dim=1)

        def quantiles(self, code: Any, queries: Any) -> Any:
            b, q, _ = queries.shape
            x = torch.cat([code[:, None, :].expand(b, q, code.shape[1]), queries], dim=2)
            raw = self.head(x)
            gaps = nn.functional.softplus(raw[..., 1:])
            mid = N_LEVELS // 2
            base = raw[..., :1]
            # Quantiles from the median outwards: monotone whatever the weights.
            up = base + torch.cumsum(gaps[..., mid:], dim=-1)
            down = base - torch.flip(torch.cumsum(torch.flip(gaps[..., :mid], [-1]), -1), [-1])
            return torch.cat([down, base, up], dim=-1)

        def forward(self, seq: Any, feats: Any, queries: Any) -> Any:
            return self.quantiles(self.encode(seq, feats), queries)

    return CurveNet()


def query_features(frame: features.Frame, steps: FloatArray) -> FloatArray:
    """(n, 2): the share of the way to the budget (log-step) and log(step / last step)."""
    t = max(float(frame.last_step), 1.0)
    s = np.maximum(np.asarray(steps, dtype=np.float64), t)
    return np.stack([features.path_weight(frame, s), np.log(s / t)], axis=1)


@dataclass(frozen=True)
class SequenceForecaster:
    """The GRU forecaster, serving from an artifact."""

    net: Any = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    n_samples: int = 200
    name: ClassVar[str] = NAME
    version: ClassVar[int] = VERSION

    def needs_history(self, curve: Curve) -> bool:
        return False

    def predict_z(self, seq: FloatArray, feats: FloatArray, queries: FloatArray) -> FloatArray:
        """(n, n_queries, len(LEVELS)) quantiles of z, batched."""
        import torch

        with torch.inference_mode():
            out = self.net(
                torch.as_tensor(seq, dtype=torch.float32),
                torch.as_tensor(feats, dtype=torch.float32),
                torch.as_tensor(queries, dtype=torch.float32),
            )
        return np.asarray(out.numpy(), dtype=np.float64)

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        return self.fit_many([curve])[0]

    def fit_many(self, curves: Sequence[Curve]) -> list[Prediction]:
        """fit() for many curves with one encoder call: the batch path."""
        import torch

        out: list[Prediction] = []
        ready = [(i, features.extract(c)) for i, c in enumerate(curves) if not features.usable(c)]
        codes = {}
        if ready:
            with torch.inference_mode():
                code = self.net.encode(
                    torch.as_tensor(np.stack([f.sequence for _, f in ready]), dtype=torch.float32),
                    torch.as_tensor(np.stack([f.features for _, f in ready]), dtype=torch.float32),
                )
            codes = {i: (code[j : j + 1], f) for j, (i, f) in enumerate(ready)}
        for i, curve in enumerate(curves):
            if i not in codes:
                why = features.usable(curve) or "unusable"
                out.append(fallback(curve, self.name, self.version, why))
            else:
                out.append(self._prediction(curve, *codes[i]))
        return out

    def _prediction(self, curve: Curve, code: Any, f: features.CurveFeatures) -> Prediction:
        import torch

        net, frame = self.net, f.frame

        def z_at(steps: FloatArray) -> FloatArray:
            q = torch.as_tensor(query_features(frame, steps)[None], dtype=torch.float32)
            with torch.inference_mode():
                zq = net.quantiles(code, q)[0].numpy().astype(np.float64)
            zq[np.asarray(steps) <= frame.last_step] = 0.0  # the past is the present level
            return np.asarray(zq)

        final = z_at(np.array([float(frame.horizon)]))[0]
        return quantile_prediction(
            curve, frame, final, self.name, self.version, self.n_samples, z_at=z_at
        )

    def files(self) -> dict[str, bytes]:
        import torch

        buf = io.BytesIO()
        torch.save(self.net.state_dict(), buf)
        return {"net.pt": buf.getvalue()}


@dataclass
class SeqData:
    """Training examples: sequences, features, queries, their z values and weights."""

    seq: FloatArray  # (n, SEQ_LEN, 3)
    feats: FloatArray  # (n, N_FEATURES)
    queries: FloatArray  # (n, Q, 2)
    z: FloatArray  # (n, Q), NaN where a query is missing
    weight: FloatArray  # (n,)


def train(
    data: SeqData,
    *,
    net: Any = None,
    epochs: int = 8,
    lr: float = 2e-3,
    batch_size: int = 256,
    threads: int = 2,
    seed: int = 0,
    normalise_on: FloatArray | None = None,
    progress: Callable[[str], None] | None = None,
) -> SequenceForecaster:
    """Trains (or, given net, fine-tunes) on data with the pinball loss.

    normalise_on: the features the input scaling is fitted on, for a new net (default: data's);
    pass the fine-tuning data's too, so features the pre-training never saw (the config) are
    scaled like the others."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if net is None:
        net = build_net()
        feats = data.feats if normalise_on is None else normalise_on
        with np.errstate(all="ignore"):
            mean = np.nanmean(np.where(np.isfinite(feats), feats, np.nan), axis=0)
            std = np.nanstd(np.where(np.isfinite(feats), feats, np.nan), axis=0)
        net.feat_mean.copy_(torch.as_tensor(np.nan_to_num(mean), dtype=torch.float32))
        net.feat_std.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))
    seq = torch.as_tensor(data.seq, dtype=torch.float32)
    feats_t = torch.as_tensor(data.feats, dtype=torch.float32)
    queries = torch.as_tensor(data.queries, dtype=torch.float32)
    z = torch.as_tensor(np.clip(data.z, -features.Z_CLIP, features.Z_CLIP), dtype=torch.float32)
    weight = torch.as_tensor(data.weight / data.weight.mean(), dtype=torch.float32)
    levels = torch.as_tensor(features.LEVELS, dtype=torch.float32)
    n = len(seq)
    steps_total = epochs * math.ceil(n / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps_total, 1))
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            pred = net(seq[idx], feats_t[idx], queries[idx])  # (b, q, L)
            target = z[idx]
            known = torch.isfinite(target)
            diff = torch.where(known, target, 0.0)[..., None] - pred
            pinball = torch.maximum(levels * diff, (levels - 1) * diff).mean(-1)
            per_example = (pinball * known).sum(1) / known.sum(1).clamp(min=1)
            loss = (per_example * weight[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(f"sequence epoch {epoch + 1}/{epochs} loss {total / n:.4f}")
    net.eval()
    return SequenceForecaster(net)


def load(folder: Path, bank: Any = None) -> SequenceForecaster:
    """The sequence artifact under folder (ArtifactError when not this version or corrupt)."""
    import torch

    art = artifacts.load(folder, NAME, VERSION)
    net = build_net(int(art.meta.get("hidden", HIDDEN)))
    try:
        state = torch.load(io.BytesIO(art.files["net.pt"]), weights_only=True)
        net.load_state_dict(state)
    except Exception as e:  # torch raises several types on a bad file
        raise artifacts.ArtifactError(
            f"artifact sequence at {art.path}: net.pt is corrupt: {e}"
        ) from None
    net.eval()
    return SequenceForecaster(net, dict(art.meta))
