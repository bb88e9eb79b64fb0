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
# Study and run names as a tenant sends them: the store keeps 200 characters, and a tenant's
# studies are stored as "<tenant>/<name>" with a tenant name of at most 64 characters.
MAX_SCOPED_NAME_CHARS = 135
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
    # Threads for engine work (fits, store writes) off the event loop. A report holds its
    # thread while its commit waits on the disk, so this also bounds how many reports one
    # group commit can take (docs/benchmarks.md, issue 18's throughput pass).
    workers: int = 16
    forecast_cache_size: int = 10_000
    grace_s: float = 10.0  # how long in-flight RPCs may drain on shutdown
    auth_token: str = ""  # when set, every RPC needs "authorization: Bearer <token>"
    log_level: str = "INFO"
    log_format: str = "auto"  # "json", "text", or "auto": text on a terminal, JSON otherwise
    # Learned-model artifacts (`forecaster train --out`): "" = the defaults shipped in the
    # package, "none" = parametric models only.
    models_dir: str = ""
    models_reload_s: float = 30.0  # how often to look for new artifacts (0 = only on SIGHUP)
    # issue 20: dashboard
    http_port: int = 0  # the dashboard, on host:http_port over HTTP (0 = no dashboard)
    allow_manual_stop: bool = False  # StopRun and the dashboard's stop button are allowed
    dashboard_refresh_s: float = 5.0  # how often an open dashboard page refreshes (0 = never)
    # issue 18: storage and scale
    db_pool_size: int = 16  # PostgreSQL connections per process for writes, as many for reads
    store_check_s: float = 1.0  # how often health asks the store (a deleted SQLite file...)
    processes: int = 1  # server processes on one port (SO_REUSEPORT); > 1 needs PostgreSQL

    # issue 18: security, limits, operations
    # TLS: the server's certificate chain and key (PEM files); with tls_client_ca, clients must
    # present a certificate signed by that CA (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Lines "token tenant" ("*" as the tenant: an admin token that sees every study); beside
    # auth_token, which stays the admin token it always was.
    tokens_file: str = ""
    open_health: bool = True  # health checks need no token (probes, load balancers)
    open_reflection: bool = True  # reflection needs no token (grpcurl); False: a token needed
    metrics_port: int = 0  # Prometheus metrics over HTTP on this port (0 = off)
    metrics_host: str = ""  # "" = the same address as host
    tracing: bool = False  # OpenTelemetry spans for each RPC (needs opentelemetry installed)
    # Limits on what one request may carry; beyond them: INVALID_ARGUMENT naming the limit.
    max_at_steps: int = 1_000  # at_steps of GetForecast / ForecastCurve
    max_quantile_levels: int = 99
    max_name_chars: int = 128  # study and run names (room left for a tenant's prefix)
    max_metric_chars: int = 128
    max_config_keys: int = 1_000  # keys in a run's config or a policy's params, nested ones too
    max_config_bytes: int = 64 * 1024  # encoded size of a config or policy params
    max_schedule_pairs: int = 10_000  # (step, value) pairs of an explicit lr schedule
    max_step_value: int = 10**12  # the largest step (or max_step) accepted anywhere
    page_size: int = 100  # ListRuns / ListStudies page when the request says 0
    max_page_size: int = 1_000
    # Connections and streams.
    keepalive_time_s: float = 60.0  # the server pings a quiet connection this often
    keepalive_timeout_s: float = 20.0  # and closes it when the ping is not answered in time
    stream_idle_timeout_s: float = 300.0  # a StreamMetrics that sends nothing this long is closed
    max_concurrent_streams: int = 1_000  # StreamMetrics open at once, all clients together

    # issue 18 (second pass): tokens from the environment, streams per connection
    # "token tenant" pairs separated by commas or newlines, as the lines of tokens_file (for a
    # Secret mapped to FORECASTER_TOKENS); no flag, so that no token shows in `ps`.
    tokens: str = ""
    # HTTP/2 streams (RPCs of every kind) one connection may have open at once; more wait in
    # the client until one ends. Room for a sweep driver that multiplexes its trials on one
    # connection: at 100, 250 trainers on one connection waited 83 ms (p50) instead of 6 ms.
    max_streams_per_connection: int = 1_000

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
        if self.log_format not in ("json", "text", "auto"):
            raise InvalidArgumentError(
                f"log_format must be 'json', 'text' or 'auto'; got {self.log_format!r}."
            )
        self._check_issue_18()

    def _check_issue_18(self) -> None:
        """The security and limit settings: files given in pairs, limits positive."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgumentError(
                "tls_cert and tls_key go together: set both (PEM files) or neither."
            )
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgumentError(
                "tls_client_ca (mutual TLS) needs the server's own tls_cert and tls_key."
            )
        if not 0 <= self.metrics_port <= 65535:
            raise InvalidArgumentError(
                f"metrics_port must be in [0, 65535] (0 = off); got {self.metrics_port}."
            )
        for name in (
            "max_at_steps",
            "max_quantile_levels",
            "max_name_chars",
            "max_metric_chars",
            "max_config_keys",
            "max_config_bytes",
            "max_schedule_pairs",
            "max_step_value",
            "page_size",
            "max_page_size",
            "max_concurrent_streams",
            "max_streams_per_connection",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.max_name_chars > MAX_SCOPED_NAME_CHARS:
            raise InvalidArgumentError(
                f"max_name_chars must be <= {MAX_SCOPED_NAME_CHARS} (the store keeps 200 "
                f"characters, a tenant's prefix included); got {self.max_name_chars}."
            )
        if self.max_step_value > 2**53:
            raise InvalidArgumentError(
                f"max_step_value must be <= 2**53 (steps are also held as doubles); got "
                f"{self.max_step_value}."
            )
        if self.page_size > self.max_page_size:
            raise InvalidArgumentError(
                f"page_size={self.page_size} exceeds max_page_size={self.max_page_size}."
            )
        for name in ("keepalive_time_s", "keepalive_timeout_s", "stream_idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(f"{name} must be > 0; got {getattr(self, name)}.")

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
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError:
                raise InvalidArgumentError(
                    f"{ENV_PREFIX}{f.name.upper()} must be a {kind.__name__}; got {raw!r}."
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse_bool(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(raw)


# The settings of the issue-18 block, each also a flag of `forecaster serve` (--tls-cert ...).
SECURITY_AND_LIMIT_SETTINGS = (
    "tls_cert", "tls_key", "tls_client_ca", "tokens_file", "open_health", "open_reflection",
    "metrics_port", "metrics_host", "tracing", "max_at_steps", "max_quantile_levels",
    "max_name_chars", "max_metric_chars", "max_config_keys", "max_config_bytes",
    "max_schedule_pairs", "max_step_value", "page_size", "max_page_size", "keepalive_time_s",
    "keepalive_timeout_s", "stream_idle_timeout_s", "max_concurrent_streams",
    "max_streams_per_connection",
)  # fmt: skip


def settings_table() -> list[tuple[str, str, str]]:
    """(flag/field, environment variable, default) rows for the README and `serve --help`."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), repr(f.default)) for f in dataclasses.fields(Settings)
    ]
