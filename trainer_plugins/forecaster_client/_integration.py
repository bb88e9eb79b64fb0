"""What every framework integration shares: importing its framework, finding its metric."""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

log = logging.getLogger("forecaster_client")


def require(module: str, extra: str) -> ModuleType:
    """Imports a framework, or says which extra of forecaster-client installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this integration needs {module!r}, which is not installed ({e}): "
            f'pip install "forecaster-client[{extra}]"'
        ) from e


class MetricLookup:
    """Reads the monitored metric from a framework's logs; when a log that should hold it
    does not, warns once with the names it did find."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        self._warned = False

    def find(self, logs: Mapping[str, Any] | None) -> float | None:
        if logs and self.name in logs:
            value = logs[self.name]
            try:
                return float(value.item() if hasattr(value, "item") else value)
            except (TypeError, ValueError):
                return math.nan
        if not self._warned:
            self._warned = True
            log.warning(
                "forecaster: no metric %r in the %s; found: %s. Pass the name to monitor.",
                self.name,
                self.where,
                ", ".join(sorted(map(str, logs or {}))) or "nothing",
            )
        return None
