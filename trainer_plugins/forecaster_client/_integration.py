"""What every framework integration shares: importing its framework, finding its metric."""

from __future__ import annotations

import importlib
import logging
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

    def find(self, logs: Mapping[str, Any] | None) -> Any:
        """The value as logged: a tensor stays one, so the Reporter reads it off the
        training thread (no device sync here); None when it is not there."""
        if logs and self.name in logs:
            return logs[self.name]
        if not self._warned:
            self._warned = True
            log.warning(
                "forecaster: no metric %r in the %s; found: %s. Pass the name to monitor.",
                self.name,
                self.where,
                ", ".join(sorted(map(str, logs or {}))) or "nothing",
            )
        return None
