"""Prometheus metrics, served over HTTP on `metrics_port` by prometheus_client's WSGI app.

One registry per service (not the library's global one), so two servers in one process (the
tests) keep their counts apart. With several processes on one port (settings.processes) each
process writes its values to files in one folder (prometheus_client's multiprocess mode, set up
by `processes.prepare` before prometheus_client is imported) and every process serves, on the
one shared metrics port, the sum over all of them: a scrape sees the whole service whichever
process the kernel hands it to. What is measured and where:
- RPCs by method and status code, with latency histograms: the access-log interceptor.
- points stored, decisions by action and reason: the servicer, on every ReportMetrics and
  StreamMetrics batch.
- forecast fit time by model and the forecast cache's hits and misses: the engine, through its
  observer (forecaster/observer.py).
- store latency by operation: TimedStore, which wraps the store the engine is given.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from socketserver import BaseServer
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer

from forecaster.store import Store

_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str:
    """The folder the processes of one service write their values to; "" with one process."""
    return os.environ.get(MULTIPROCESS_VARIABLE, "")


class _SharedPortServer(ThreadingWSGIServer):
    """The metrics endpoint, bound with SO_REUSEPORT so that every process serves it."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not access-logged
        pass


class ServiceMetrics:
    """The service's metrics in their own registry; also the engine's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared_dir = multiprocess_dir()
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
            "forecaster_streams_open",
            "StreamMetrics streams open now",
            registry=r,
            multiprocess_mode="livesum",  # summed over the live processes
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
        """Starts the HTTP endpoint (/metrics) in a thread; returns the bound port. With several
        processes the port is shared and what is served is the sum over the processes."""
        registry = self.registry
        server_class: type[ThreadingWSGIServer] = ThreadingWSGIServer
        if self.shared_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.shared_dir)
            server_class = _SharedPortServer
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        bound_class = type("MetricsServer", (server_class,), {"address_family": family})
        server: ThreadingWSGIServer = make_server(
            host, port, make_wsgi_app(registry), bound_class, handler_class=_QuietHandler
        )
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        bound: int = server.server_port
        return bound

    def close(self) -> None:
        if self._server is not None:
            server: BaseServer = self._server
            server.shutdown()
            server.server_close()
            self._server = None
        if self.shared_dir:  # this process's open-streams gauge leaves the sum
            multiprocess.mark_process_dead(os.getpid(), self.shared_dir)


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
