"""The Forecaster protocol and the registry that finds forecasters by name.

A new forecaster is one new file with a class implementing `Forecaster`, plus one line in
`_REGISTRY`. The registry imports lazily, so that `forecaster serve` on its defaults never
imports a heavy dependency it does not use.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.metric_kinds import on_starting_plateau
from forecaster.models.prediction import Prediction

if TYPE_CHECKING:
    from forecaster.models.artifacts import ModelBank


class _StudyFits:
    """Study-level fits made from one history, by law name: a law shared across a study is
    fitted once per history, however many runs are forecast with it. Thread-safe."""

    def __init__(self) -> None:
        self._fits: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str, fit: Callable[[], Any]) -> Any:
        """The fit called name, made by fit() on first use (fit may run twice under a race;
        fits are deterministic, so either answer is the same)."""
        with self._lock:
            if name in self._fits:
                return self._fits[name]
        value = fit()
        with self._lock:
            return self._fits.setdefault(name, value)


@dataclass(frozen=True)
class StudyHistory:
    """The completed runs of a study, as curves, with a key that changes when they do.

    The history owns the study-level fits made from it (`fits`): whoever keeps a history while
    its key is unchanged (the engine, the replay) keeps those fits, and a new history (a run
    completed) starts afresh. Nothing is cached across histories in a module.
    """

    curves: tuple[Curve, ...] = ()
    key: str = ""
    fits: _StudyFits = field(default_factory=_StudyFits, init=False, repr=False, compare=False)


@runtime_checkable
class Forecaster(Protocol):
    """Fits a curve and returns a predictive distribution, never a point alone."""

    version: ClassVar[int]  # bumped when outputs change; stored with every forecast

    @property
    def name(self) -> str:
        """The registry key; the same string on the wire, in the CLI, in the store."""
        ...

    def needs_history(self, curve: Curve) -> bool:
        """Whether fit(curve) reads the study's completed runs: callers build the history
        (and key their caches on it) only then."""
        ...

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        """Forecasts the curve's metric. Never raises on ugly data: falls back and says so.

        history: the study's other, completed runs; models that share parameters across a
        study (the annealing laws) learn from it, the others ignore it.
        """
        ...


AUTO = "auto"
# Curves with this many finite points get the short-curve law from auto (from 3: below that
# only the last value; up to 4: from 5 the power-law ensemble fits).
SHORT_MIN_POINTS, SHORT_MAX_POINTS = 3, 5

# name -> (module, factory, keyword arguments), imported on first use.
_REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "power_law": ("forecaster.models.power_law", "PowerLawForecaster", {}),
    "last_value": ("forecaster.models.baselines", "LastValueForecaster", {}),
    "damped_trend": ("forecaster.models.baselines", "DampedTrendForecaster", {}),
    "annealing_law": ("forecaster.models.annealing_law", "AnnealingLawForecaster", {}),
    "multi_power_law": ("forecaster.models.multi_power_law", "MultiPowerLawForecaster", {}),
    "short_curve": ("forecaster.models.short_curve", "ShortCurveForecaster", {}),
    "plateau": ("forecaster.models.plateau", "PlateauForecaster", {}),
}
# Each parametric family alone, for comparison ("pow3" is the naive single fit).
_FAMILY_NAMES = (
    "pow3", "pow4", "log_power", "exp3", "exp4", "mmf", "janoschek", "weibull", "ilog2",
    "vapour_pressure", "hill",
)  # fmt: skip
# Learned forecasters: served from the ModelBank the caller passes (models/artifacts.py);
# name -> the module whose `load(folder, bank)` reads its artifact.
_LEARNED: dict[str, str] = {
    "gbm": "forecaster.models.gbm",
    "sequence": "forecaster.models.sequence",
    "ensemble": "forecaster.models.ensemble",  # after the models it stacks
}
for _family in _FAMILY_NAMES:
    _REGISTRY[_family] = (
        "forecaster.models.power_law",
        "PowerLawForecaster",
        {"name": _family, "families": (_family,), "include_last_value": False},
    )


# The schedule law auto serves. Each source chooses the other's: from 30% of a run with the
# study's completed runs (benchmarks/schedule_laws.py, 20 runs a task), the multi-power law
# against the annealing law is 0.75% against 1.00% mean relative error of the final loss on
# nanogpt_speedrun (so lr_scheduling_llm gets the multi-power law), and 0.47% against 0.47% on
# lr_scheduling_llm (a tie since the multi-power law's grid of starts: nanogpt_speedrun keeps it
# too; before the grid, 0.46% against 0.50%).
AUTO_LAW = "multi_power_law"


def auto_choice(curve: Curve | None, bank: ModelBank | None) -> str:
    """What "auto" means for a curve, by what wins benchmarks/forecast_accuracy.py on tasks
    no model trained on (docs/benchmarks.md):

    - the plateau (the last value, said so) while the metric is on its kind's starting
      plateau (a WER near 1, a win rate near 0.5): no trend to extrapolate yet;
    - the multi-power law (`AUTO_LAW`) when the metric is a loss and the learning rate is
      known into the future (a planned schedule, or a logged lr the run will keep): on the
      LR-schedule sources it beats the learned models, which have seen few such tasks;
    - else the short-curve law on curves of 3-4 points, too short for the others' fits
      (benchmarks/short_curve_priors.py);
    - else the learned ensemble when it is loaded and the run has a budget (its medae is
      0.52-0.69 of the best parametric model's on four of the five other sources, and even on
      the fifth, taskset: 1.01);
    - else the power-law ensemble.

    bank: the learned models in use (None: none).
    """
    finite = curve.values[np.isfinite(curve.values)] if curve is not None else np.zeros(0)
    if curve is not None and on_starting_plateau(curve.kind, finite):
        return "plateau"
    if (
        curve is not None
        and curve.direction is Direction.MIN
        and (curve.schedule is not None or (curve.lr is not None and not np.isnan(curve.lr).all()))
    ):
        return AUTO_LAW
    if SHORT_MIN_POINTS <= len(finite) < SHORT_MAX_POINTS:
        return "short_curve"
    has_budget = (
        curve is not None and curve.max_step is not None and curve.max_step > curve.last_step
    )
    if has_budget and bank is not None and bank.get("ensemble") is not None:
        return "ensemble"
    return "power_law"


def learned_loaders() -> dict[str, Callable[[Path, Any], Forecaster]]:
    """name -> load(folder, bank) for each learned forecaster, in load order."""
    return {name: importlib.import_module(module).load for name, module in _LEARNED.items()}


def is_learned(name: str) -> bool:
    return name in _LEARNED


def available() -> list[str]:
    """The registered forecaster names, plus "auto"."""
    return [AUTO, *sorted([*_REGISTRY, *_LEARNED])]


def check_name(name: str) -> str:
    """Returns the canonical name ("" -> "auto"); InvalidArgumentError for unknown names."""
    name = name or AUTO
    if name != AUTO and name not in _REGISTRY and name not in _LEARNED:
        raise InvalidArgumentError(
            f"unknown forecaster {name!r}; choose one of {', '.join(available())}."
        )
    return name


def create(name: str, curve: Curve | None = None, *, bank: ModelBank | None = None) -> Forecaster:
    """Builds the forecaster registered under name, with its default settings; "auto" picks
    by `auto_choice(curve, bank)`. A learned name is served from bank (None: no learned
    models, so a stand-in that falls back to power_law and says why)."""
    name = check_name(name)
    if name == AUTO:
        name = auto_choice(curve, bank)
    if name in _LEARNED:
        from forecaster.models.learned import from_bank

        return from_bank(name, bank)
    module, factory, kwargs = _REGISTRY[name]
    forecaster: Forecaster = getattr(importlib.import_module(module), factory)(**kwargs)
    return forecaster
