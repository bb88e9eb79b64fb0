"""What the engine tells whoever watches it (the service's metrics); nothing by default."""

from __future__ import annotations

from typing import Protocol


class EngineObserver(Protocol):
    def forecast_fitted(self, model: str, seconds: float) -> None:
        """A forecaster (by registry name) fitted a run's curve in seconds."""

    def cache_lookup(self, hit: bool) -> None:
        """A read found the run's forecast and decision in the cache (hit) or not."""


class NoObserver:
    """The default: observes nothing."""

    def forecast_fitted(self, model: str, seconds: float) -> None:
        pass

    def cache_lookup(self, hit: bool) -> None:
        pass
