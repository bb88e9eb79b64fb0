"""The Forecaster protocol and the registry that finds forecasters by name.

A new forecaster is one new file with a class implementing `Forecaster`, plus one line in
`_REGISTRY`. The registry imports lazily, so that `forecaster serve` on its defaults never
imports a heavy dependency it does not use.
"""

from __future__ import annotations

import importlib
from typing import ClassVar, Protocol, runtime_checkable

from forecaster.curves import Curve
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction


@runtime_checkable
class Forecaster(Protocol):
    """Fits a curve and returns a predictive distribution, never a point alone."""

    name: ClassVar[str]  # registry key; the same string on the wire, in the CLI, in the store
    version: ClassVar[int]  # bumped when outputs change; stored with every forecast

    def fit(self, curve: Curve) -> Prediction:
        """Forecasts the curve's metric. Never raises on ugly data: falls back and says so."""
        ...


AUTO = "auto"

# name -> "module:Class", imported on first use.
_REGISTRY: dict[str, str] = {
    "power_law": "forecaster.models.power_law:PowerLawForecaster",
    "last_value": "forecaster.models.power_law:LastValueForecaster",
}
# What "auto" means until the forecasting issues bring better models.
_AUTO_CHOICE = "power_law"


def available() -> list[str]:
    """The registered forecaster names, plus "auto"."""
    return [AUTO, *sorted(_REGISTRY)]


def check_name(name: str) -> str:
    """Returns the canonical name ("" -> "auto"); InvalidArgumentError for unknown names."""
    name = name or AUTO
    if name != AUTO and name not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown forecaster {name!r}; choose one of {', '.join(available())}."
        )
    return name


def create(name: str) -> Forecaster:
    """Builds the forecaster registered under name, with its default settings."""
    name = check_name(name)
    if name == AUTO:
        name = _AUTO_CHOICE
    module, _, cls = _REGISTRY[name].partition(":")
    forecaster: Forecaster = getattr(importlib.import_module(module), cls)()
    return forecaster
