"""Forecasters: one file per family behind the `Forecaster` protocol, found by name."""

from forecaster.models.base import (
    AUTO,
    Forecaster,
    StudyHistory,
    auto_choice,
    available,
    check_name,
    create,
    is_learned,
)
from forecaster.models.prediction import DEFAULT_QUANTILES, Prediction

__all__ = [
    "AUTO",
    "DEFAULT_QUANTILES",
    "Forecaster",
    "Prediction",
    "StudyHistory",
    "auto_choice",
    "available",
    "check_name",
    "create",
    "is_learned",
]
