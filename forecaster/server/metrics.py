"""Prometheus metrics, served over HTTP on `metrics_port` by prometheus_client's own server.

One registry per service (not the library's global one), so two servers in one process (the
tests) keep their counts apart. What is measured and where:
- RPCs by method and status code, with latency histograms: the access-log interceptor.
- points stored, decisions by action and reason: the servicer, on every ReportMetrics and
  StreamMetrics batch.
- forecast fit time by model and the forecast cache's hits and misses: the engine, through its
  observer (forecaster/observer.py).
- store latency by operation: TimedStore, which wraps the store the engine is given.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from forecaster.store import Store

_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's metrics in their own registry; also the engine's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "forecaster_rpcs",
            "RPCs answered, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "forecaster_rpc_seconds",
            "RPC latency, by method and status code",
            ["method", "code"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.points = Counter("forecaster_points_stored", "points stored", registry=r)
        self.decisions = Counter(
            "forecaster_decisions",
            "decisions returned for reported points, by action and reason",
            ["action", "reason"],
            registry=r,
        )
        self.fit_seconds = Histogram(
            "forecaster_forecast_fit_seconds",
            "time to fit a forecast, by model",
            ["model"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "forecaster_forecast_cache",
            "forecast cache lookups, by result (hit or miss)",
            ["result"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "forecaster_store_seconds",
            "store call latency, by operation",
            ["operation"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.streams = Gauge(
            "forecaster_streams_open", "StreamMetrics streams open now", registry=r
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- the engine's observer --------------------------------------------------------------

    def forecast_fitted(self, model: str, seconds: float) -> None:
        self.fit_seconds.labels(model=model).observe(seconds)

    def cache_lookup(self, hit: bool) -> None:
        self.cache.labels(result="hit" if hit else "miss").inc()

    # -- the endpoint -----------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Starts the HTTP endpoint (/metrics) in a thread; returns the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound: int = self._server.server_port
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class TimedStore:
    """A Store whose every call is timed into forecaster_store_seconds{operation}."""

    def __init__(self, store: Store, metrics: ServiceMetrics) -> None:
        self._store = store
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        histogram = self._metrics.store_seconds.labels(operation=name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - start)

        return timed

    @staticmethod
    def wrap(store: Store, metrics: ServiceMetrics | None) -> Store:
        """store itself without metrics; else the timed store, typed as the Store it stands in
        for (it answers every attribute of store)."""
        if metrics is None:
            return store
        return cast(Store, TimedStore(store, metrics))
