"""Service settings: defaults, FORECASTER_* environment variables, then command-line flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecaster.errors import InvalidArgumentError

ENV_PREFIX = "FORECASTER_"


def default_db_url() -> str:
    """SQLite in the user's data directory (e.g. ~/.local/share/forecaster/forecaster.db)."""
    import platformdirs

    return f"sqlite:///{Path(platformdirs.user_data_dir('forecaster')) / 'forecaster.db'}"


@dataclass(frozen=True)
class Settings:
    """Everything `forecaster serve` can be told. Each field is also FORECASTER_<NAME>."""

    host: str = "127.0.0.1"
    port: int = 50051
    db: str = ""  # empty: default_db_url()
    max_points_per_batch: int = 10_000
    max_message_bytes: int = 4 * 1024 * 1024
    workers: int = 8  # threads for engine work (fits, store writes) off the event loop
    forecast_cache_size: int = 10_000
    grace_s: float = 10.0  # how long in-flight RPCs may drain on shutdown
    auth_token: str = ""  # when set, every RPC needs "authorization: Bearer <token>"
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"
    # Learned-model artifacts (`forecaster train --out`): "" = the defaults shipped in the
    # package, "none" = parametric models only.
    models_dir: str = ""
    models_reload_s: float = 30.0  # how often to look for new artifacts (0 = only on SIGHUP)
    # issue 20: dashboard
    http_port: int = 0  # the dashboard, on host:http_port over HTTP (0 = no dashboard)
    allow_manual_stop: bool = False  # StopRun and the dashboard's stop button are allowed
    dashboard_refresh_s: float = 5.0  # how often an open dashboard page refreshes (0 = never)
    # issue 18: storage and scale
    db_pool_size: int = 16  # PostgreSQL connections per process (2 x workers: reports, reads)
    store_check_s: float = 1.0  # how often health asks the store (a deleted SQLite file...)
    processes: int = 1  # server processes on one port (SO_REUSEPORT); > 1 needs PostgreSQL

    def __post_init__(self) -> None:
        for name in ("port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise InvalidArgumentError(
                    f"{name} must be in [0, 65535]; got {getattr(self, name)}."
                )
        if self.dashboard_refresh_s < 0:
            raise InvalidArgumentError(
                f"dashboard_refresh_s must be >= 0; got {self.dashboard_refresh_s}."
            )
        for name in ("max_points_per_batch", "max_message_bytes", "workers"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1; got {getattr(self, name)}.")
        for name in ("db_pool_size", "processes"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.store_check_s <= 0:
            raise InvalidArgumentError(f"store_check_s must be > 0; got {self.store_check_s}.")
        if self.models_reload_s < 0:
            raise InvalidArgumentError(f"models_reload_s must be >= 0; got {self.models_reload_s}.")
        if self.log_format not in ("json", "text"):
            raise InvalidArgumentError(
                f"log_format must be 'json' or 'text'; got {self.log_format!r}."
            )

    @property
    def db_url(self) -> str:
        return self.db or default_db_url()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then FORECASTER_* variables, then the non-None overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind: type[Any] = type(f.default)
            try:
                values[f.name] = _boolean(raw) if kind is bool else kind(raw)
            except ValueError:
                raise InvalidArgumentError(
                    f"{ENV_PREFIX}{f.name.upper()} must be a {kind.__name__}; got {raw!r}."
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _boolean(raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); anything else is refused."""
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def settings_table() -> list[tuple[str, str, str]]:
    """(flag/field, environment variable, default) rows for the README and `serve --help`."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), repr(f.default)) for f in dataclasses.fields(Settings)
    ]
