"""Building and running the gRPC server: TLS, auth, health, reflection, limits, metrics,
graceful shutdown.

Start-up binds the port first (a port in use is a one-line error at once), answers health
NOT_SERVING while the store opens and the learned models load, then SERVING.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from forecaster.config import Settings
from forecaster.engine import Engine
from forecaster.errors import ForecasterError, StartupError
from forecaster.limits import Limits
from forecaster.models.artifacts import ModelBank
from forecaster.server import processes
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.auth import Authenticator
from forecaster.server.http import HttpSide, start_http
from forecaster.server.interceptors import AuthInterceptor, RequestIdInterceptor
from forecaster.server.metrics import ServiceMetrics, TimedStore
from forecaster.server.servicer import CurveServicer
from forecaster.store import open_store

log = logging.getLogger("forecaster.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CurveService"].full_name


@dataclass
class RunningServer:
    """A started server and what must be closed with it."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    servicer: CurveServicer
    executor: ThreadPoolExecutor
    metrics: ServiceMetrics | None = None
    metrics_port: int = 0
    watcher: asyncio.Task[None] | None = None
    models_reload_s: float = 0.0
    reads: ThreadPoolExecutor | None = None  # GetDecision/GetRun, never queued behind reports
    http: HttpSide | None = None  # the dashboard, when http_port is set
    store_watcher: asyncio.Task[None] | None = None
    store_check_s: float = 1.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def engine(self) -> Engine:
        if self.servicer.engine is None:
            raise RuntimeError("the engine is not attached yet")
        return self.servicer.engine

    @property
    def models(self) -> ModelBank:
        bank = self.engine.models
        return bank if bank is not None else ModelBank(None)

    async def attach(self, engine: Engine) -> None:
        """Serves engine from now on (its store timed and its fits observed into the metrics
        when they are on): health goes SERVING."""
        if self.metrics is not None:
            engine.store = TimedStore.wrap(engine.store, self.metrics)
            engine.observer = self.metrics
        self.servicer.attach(engine)
        bank = self.models
        log.info(
            "models",
            extra={
                "fields": {"dir": str(bank.folder), "loaded": bank.names(), "refused": bank.refused}
            },
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.models_reload_s > 0:
            self.watcher = asyncio.create_task(self._watch_models(self.models_reload_s))
        self.store_watcher = asyncio.create_task(self._watch_store(self.store_check_s))

    async def reload_models(self) -> dict[str, str]:
        """Reloads the learned models (off the event loop); a refused artifact leaves the
        loaded model in place. Cached forecasts are dropped so the next read uses them."""
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.executor, self.models.reload)
        if any(v.startswith("loaded") for v in outcome.values()):
            self.engine.forget_forecasts()
        return outcome

    async def _watch_models(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                if self.models.changed():
                    await self.reload_models()
            except Exception:  # a watcher bug must not stop the service
                log.exception("reloading the models failed")

    async def _watch_store(self, every_s: float) -> None:
        """Health follows the store: NOT_SERVING, with the reason logged, once it can no
        longer acknowledge writes (its SQLite file deleted or replaced); SERVING again when
        it can (the file put back)."""
        loop = asyncio.get_running_loop()
        serving = True
        while True:
            await asyncio.sleep(every_s)
            try:
                await loop.run_in_executor(self.executor, self.engine.store.check)
                ok, why = True, ""
            except ForecasterError as e:
                ok, why = False, str(e)
            except Exception as e:  # a watcher bug must not stop the service
                log.exception("checking the store failed")
                ok, why = False, str(e)
            if ok != serving:
                serving = ok
                status = health_pb2.HealthCheckResponse
                for name in ("", SERVICE_NAME):
                    await self.health.set(name, status.SERVING if ok else status.NOT_SERVING)
                if ok:
                    log.info("the store is usable again: SERVING")
                else:
                    log.error("the store cannot acknowledge writes: NOT_SERVING: %s", why)

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING, in-flight RPCs drain for up to grace_s, the store closes."""
        if self.watcher is not None:
            self.watcher.cancel()
        if self.store_watcher is not None:
            self.store_watcher.cancel()
        if self.http is not None:
            await self.http.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.executor.shutdown(wait=True)
        if self.reads is not None:
            self.reads.shutdown(wait=True)
        if self.metrics is not None:
            self.metrics.close()
        if self.servicer.engine is not None:
            self.servicer.engine.store.close()
        log.info("stopped; the store is closed")


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise StartupError(
            f"{setting} {path!r} cannot be read ({e.strerror}): fix --{setting.replace('_', '-')} "
            f"or FORECASTER_{setting.upper()}."
        ) from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from tls_cert/tls_key (PEM), mutual TLS when tls_client_ca is set; None: plain."""
    if not settings.tls_cert:
        return None
    pair = (_read(settings.tls_key, "tls_key"), _read(settings.tls_cert, "tls_cert"))
    ca = _read(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))


def check_port_free(host: str, port: int, setting: str, *, shared: bool = False) -> None:
    """StartupError naming the port and its setting when something already listens there
    (asked before gRPC binds, so the user reads one line, not gRPC's log). shared: the port is
    one the service's own processes share (SO_REUSEPORT), so a sibling's listener is no clash."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise StartupError(
            f"cannot resolve host {host!r} ({e}): fix --host or FORECASTER_HOST."
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise StartupError(_port_message(host, port, setting, e.errno)) from None


def _port_message(host: str, port: int, setting: str, code: int | None) -> str:
    flag, env = f"--{setting.replace('_', '-')}", f"FORECASTER_{setting.upper()}"
    if code == errno.EADDRINUSE or code is None:
        return (
            f"port {port} on {host} is already in use (setting {setting}): stop the other "
            f"process or choose another port with {flag} or {env}."
        )
    return f"cannot listen on {host}:{port} ({errno.errorcode.get(code, code)}): change {flag}."


def _tracing_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """OpenTelemetry's server interceptor when tracing is on and the package is installed."""
    if not settings.tracing:
        return []
    try:
        from opentelemetry.instrumentation.grpc import (  # type: ignore[import-not-found,unused-ignore]
            aio_server_interceptor,
        )
    except ImportError:
        log.warning(
            "tracing is on but OpenTelemetry is not installed; serving without traces "
            "(pip install opentelemetry-instrumentation-grpc opentelemetry-sdk)"
        )
        return []
    return [aio_server_interceptor()]


async def start_server(engine: Engine | None, settings: Settings) -> RunningServer:
    """Builds, binds and starts the server; the returned port is the bound one (port 0 works).

    With engine None the server answers (health NOT_SERVING, calls UNAVAILABLE) until
    `RunningServer.attach(engine)`."""
    shared = settings.processes > 1  # the ports are the processes' together (SO_REUSEPORT)
    check_port_free(settings.host, settings.port, "port", shared=shared)
    auth = Authenticator.from_settings(settings)
    credentials = server_credentials(settings)
    metrics = ServiceMetrics() if settings.metrics_port else None
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestIdInterceptor(metrics)]
    if auth.required:
        interceptors.append(
            AuthInterceptor(
                auth, open_health=settings.open_health, open_reflection=settings.open_reflection
            )
        )
    interceptors += _tracing_interceptors(settings)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Several processes of one service share the port (settings.processes).
            ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            # A connection is pinged even with no call on it, and an unanswered ping ends it
            # after keepalive_timeout (without ping_timeout_ms, gRPC 1.85 kept such a
            # connection well past it: tests/server/test_connections.py): a client whose
            # network vanished is dropped, its streams with it.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.ping_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            # One connection has at most this many RPCs open at once; more wait in the client.
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            # Clients ping every 20 s under a stream (forecaster_client): allow it.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ],
    )
    executor = ThreadPoolExecutor(
        max_workers=settings.workers, thread_name_prefix="forecaster-engine"
    )
    reads = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="forecaster-read")
    servicer = CurveServicer(
        None,
        executor,
        settings.max_points_per_batch,
        reads,
        auth=auth,
        limits=Limits.from_settings(settings),
        metrics=metrics,
        stream_idle_timeout_s=settings.stream_idle_timeout_s,
        max_concurrent_streams=settings.max_concurrent_streams,
        max_message_bytes=settings.max_message_bytes,
    )
    pb_grpc.add_CurveServiceServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.address)
        else:
            port = server.add_secure_port(settings.address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        executor.shutdown()
        reads.shutdown()
        raise StartupError(_port_message(settings.host, settings.port, "port", None))
    metrics_port = 0
    if metrics is not None:
        host = settings.metrics_host or settings.host
        try:
            check_port_free(host, settings.metrics_port, "metrics_port", shared=shared)
            metrics_port = metrics.serve(host, settings.metrics_port)
        except (StartupError, OSError) as e:
            executor.shutdown()
            reads.shutdown()
            await server.stop(0)
            if isinstance(e, StartupError):
                raise
            raise StartupError(
                _port_message(host, settings.metrics_port, "metrics_port", e.errno)
            ) from None
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    running = RunningServer(
        server,
        port,
        health,
        servicer,
        executor,
        metrics,
        metrics_port,
        models_reload_s=settings.models_reload_s,
        reads=reads,
        store_check_s=settings.store_check_s,
    )
    if settings.http_port:
        try:
            check_port_free(settings.host, settings.http_port, "http_port", shared=shared)
            running.http = await start_http(
                lambda: servicer.engine,
                executor,
                host=settings.host,
                port=settings.http_port,
                auth=auth,
                refresh_s=settings.dashboard_refresh_s,
                shared=shared,
            )
        except (StartupError, OSError) as e:
            await running.stop(0)
            raise e if isinstance(e, StartupError) else StartupError(str(e)) from None
    if engine is not None:
        await running.attach(engine)
    return running


def build_engine(settings: Settings) -> Engine:
    """The engine the settings describe: its store opened, its learned models loaded."""
    return Engine(
        open_store(settings.db_url, exclusive=True, pool_size=settings.db_pool_size),
        models=ModelBank.load(settings.models_dir),
        cache_size=settings.forecast_cache_size,
        allow_manual_stop=settings.allow_manual_stop,
    )


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully (with the processes it
    started, when settings.processes > 1). The port is bound before the store opens and the
    models load, so health answers NOT_SERVING meanwhile."""
    processes.check(settings)
    processes.follow_parent()
    metrics_dir = processes.prepare(settings)
    try:
        await _serve(settings, ready)
    finally:
        processes.forget(metrics_dir)


async def _serve(settings: Settings, ready: asyncio.Event | None) -> None:
    running = await start_server(None, settings)
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    scheme = "TLS" if settings.tls_cert else "plaintext"
    log.info(
        "bound; opening the store and loading the learned models (health NOT_SERVING)",
        extra={"fields": {"address": f"{shown}:{running.port}", "tls": bool(settings.tls_cert)}},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading: asyncio.Future[Engine] = loop.run_in_executor(running.executor, build_engine, settings)
    stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
    either: list[asyncio.Future[Any]] = [loading, stopping]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # stopped while loading: let it finish, then close
        engine = await loading
        await running.attach(engine)
        await running.stop(settings.grace_s)
        return
    stopping.cancel()
    failed = loading.exception()
    if failed is not None:  # the store or the models refused: close, then say why
        await running.stop(0)
        raise failed
    await running.attach(loading.result())
    # What start-up loaded (models, modules) lives as long as the process: out of the
    # collector's sight, so that its full passes under load stay short.
    gc.freeze()
    siblings = processes.start_siblings(settings)
    loaded = ", ".join(running.models.names()) or "none"
    # The first line on stdout says the service is ready (scripts and tests wait for it).
    print(
        f"forecaster listening on {shown}:{running.port} ({scheme}; database {settings.db_url}; "
        f"learned models: {loaded})",
        flush=True,
    )
    for name, why in running.models.refused.items():
        print(f"forecaster: model {name} refused: {why}", flush=True)
    if running.http is not None:
        print(f"forecaster dashboard on http://{shown}:{running.http.port}/", flush=True)
    if running.metrics_port:
        print(f"forecaster metrics on http://{shown}:{running.metrics_port}/metrics", flush=True)
    log.info(
        "serving", extra={"fields": {"address": f"{shown}:{running.port}", "db": settings.db_url}}
    )
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(running.reload_models()))
    if siblings:
        log.info("processes", extra={"fields": {"pids": [os.getpid()] + [p.pid for p in siblings]}})
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_s": settings.grace_s}})
    await asyncio.gather(
        running.stop(settings.grace_s),
        loop.run_in_executor(None, processes.stop_siblings, siblings, settings.grace_s),
    )
