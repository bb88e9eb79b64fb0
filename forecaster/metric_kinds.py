"""What kind of number a metric is: its natural bounds, and where an untrained model starts.

A forecast of an accuracy above 1, a negative cross-entropy or a perplexity below 1 is not a
forecast anyone can use, so a metric's kind bounds every forecast of it (`Prediction.bounds`).
Some kinds also have a starting plateau, the value a model that has learned nothing scores (a
WER of 1, a win rate of 0.5 against itself): a curve still sitting there is a plateau, not a
trend to extrapolate.

The kind is what the study says (`StudySpec.metric_kind`, `metric_lower`, `metric_upper`), or
else `infer_kind(metric name, direction)`: one place for the naming conventions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from forecaster.errors import InvalidArgumentError


@dataclass(frozen=True)
class MetricKind:
    """A kind of metric: its name, its natural bounds (None: unbounded on that side) and the
    value an untrained model starts at, when the kind has one."""

    name: str
    lower: float | None = None
    upper: float | None = None
    plateau: float | None = None

    def __post_init__(self) -> None:
        for side in (self.lower, self.upper):
            if side is not None and not math.isfinite(side):
                raise InvalidArgumentError(f"metric bounds must be finite; got {side}.")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise InvalidArgumentError(
                f"metric_lower must be below metric_upper; got {self.lower} >= {self.upper}."
            )

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(lower, upper) with -inf/inf for an open side; None when unbounded."""
        if self.lower is None and self.upper is None:
            return None
        return (
            -math.inf if self.lower is None else self.lower,
            math.inf if self.upper is None else self.upper,
        )

    def with_bounds(self, lower: float | None, upper: float | None) -> MetricKind:
        """This kind with explicit bounds replacing its natural ones where given."""
        return MetricKind(
            self.name,
            self.lower if lower is None else lower,
            self.upper if upper is None else upper,
            self.plateau,
        )


# The accepted names of StudySpec.metric_kind (docs/api.md says the same).
KINDS: MappingProxyType[str, MetricKind] = MappingProxyType(
    {
        "loss": MetricKind("loss", lower=0.0),
        "accuracy": MetricKind("accuracy", lower=0.0, upper=1.0),
        "probability": MetricKind("probability", lower=0.0, upper=1.0),
        "win_rate": MetricKind("win_rate", lower=0.0, upper=1.0, plateau=0.5),
        # WER counts insertions, so it can pass 1 (2% of AlgoPerf's logged WERs do).
        "error_rate": MetricKind("error_rate", lower=0.0, plateau=1.0),
        "perplexity": MetricKind("perplexity", lower=1.0),
        "unbounded": MetricKind("unbounded"),
    }
)

# Name patterns, tried in order (the first match wins); matched on the lower-cased name with
# every run of non-letters read as one "_".
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(^|_)log_?(ppl|perplexity)($|_)", "loss"),
    (r"(^|_)(ppl|perplexity)($|_)", "perplexity"),
    (
        r"(^|_)(loss|nll|ce|xent|cross_?entropy|logloss|bpb|bpc|mse|mae|rmse|squared_error"
        r"|absolute_error)($|_)",
        "loss",
    ),  # fmt: skip
    (r"(^|_)win(_?rate)?($|_)", "win_rate"),
    (r"(^|_)(wer|cer|error(_?rate)?|err)($|_)", "error_rate"),
    (
        r"(^|_)(acc|accuracy|top_?[0-9]+|auc|roc_?auc|map|ap|average_precision|dice|iou|miou"
        r"|f1|exact_match|em)($|_)",
        "accuracy",
    ),
)


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def kind_named(name: str) -> MetricKind:
    """The kind called name (one of KINDS); InvalidArgumentError naming the accepted ones."""
    kind = KINDS.get(name.strip().lower())
    if kind is None:
        raise InvalidArgumentError(
            f"unknown metric_kind {name!r}; use one of {', '.join(KINDS)} (or leave it empty "
            "to infer it from the metric name)."
        )
    return kind


def infer_kind(metric: str, minimize: bool) -> MetricKind:
    """The kind a metric's name says, checked against its direction (an "error" that is
    maximised is not an error rate); "unbounded" when the name says nothing known."""
    norm = _normal(metric)
    for pattern, kind_name in _PATTERNS:
        if re.search(pattern, norm):
            kind = KINDS[kind_name]
            lower_is_better = kind_name in ("loss", "error_rate", "perplexity")
            if lower_is_better == minimize:
                return kind
            break
    return KINDS["unbounded"]


def kind_of(
    metric: str,
    minimize: bool,
    kind: str = "",
    lower: float | None = None,
    upper: float | None = None,
) -> MetricKind:
    """The study's kind: the named one (else inferred from metric and direction), with its
    explicit bounds where given."""
    base = kind_named(kind) if kind else infer_kind(metric, minimize)
    if lower is None and upper is None:
        return base
    return base.with_bounds(lower, upper)


def bounds_for(kind: MetricKind | None, values: np.ndarray) -> tuple[float, float] | None:
    """The bounds a forecast of this curve keeps: the kind's, less any side the logged values
    themselves cross (an "accuracy" logged in percent is not bounded by 1): the data wins over
    a name."""
    if kind is None or kind.bounds is None:
        return None
    lower, upper = kind.bounds
    finite = values[np.isfinite(values)]
    if len(finite):
        if finite.min() < lower:
            lower = -math.inf
        if finite.max() > upper:
            upper = math.inf
    if math.isinf(lower) and math.isinf(upper):
        return None
    return (lower, upper)


# A curve is on its starting plateau while its recent level and its first values both sit
# within this share of the kind's range (1 for the [0, 1] kinds) of the plateau value.
_PLATEAU_BAND = 0.05


def on_starting_plateau(kind: MetricKind | None, values: np.ndarray) -> bool:
    """Whether a curve (values as logged, finite) has not left its kind's starting plateau:
    its first values and its recent level (median of the newest few) are both near it."""
    if kind is None or kind.plateau is None or len(values) < 3:
        return False
    span = (
        (kind.upper - kind.lower)
        if kind.upper is not None and kind.lower is not None
        else max(abs(kind.plateau), 1.0)
    )
    band = _PLATEAU_BAND * span
    recent = float(np.median(values[-min(len(values), 5) :]))
    start = float(np.median(values[: min(len(values), 3)]))
    return abs(recent - kind.plateau) <= band and abs(start - kind.plateau) <= band


__all__ = [
    "KINDS",
    "MetricKind",
    "bounds_for",
    "infer_kind",
    "kind_named",
    "kind_of",
    "on_starting_plateau",
]
