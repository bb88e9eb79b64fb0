"""Building and running the gRPC server: health, reflection, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from forecaster.config import Settings
from forecaster.engine import Engine
from forecaster.errors import ForecasterError
from forecaster.models.artifacts import ModelBank
from forecaster.server import processes
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.interceptors import RequestIdInterceptor, TokenAuthInterceptor
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
    engine: Engine
    executor: ThreadPoolExecutor
    models: ModelBank
    reads: ThreadPoolExecutor | None = None
    watcher: asyncio.Task[None] | None = None
    store_watcher: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

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
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.executor.shutdown(wait=True)
        if self.reads is not None:
            self.reads.shutdown(wait=True)
        self.engine.store.close()
        log.info("stopped; the store is closed")


async def start_server(engine: Engine, settings: Settings) -> RunningServer:
    """Builds, binds and starts the server; the returned port is the bound one (port 0 works)."""
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestIdInterceptor()]
    if settings.auth_token:
        interceptors.append(TokenAuthInterceptor(settings.auth_token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Several processes of one service share the port (settings.processes).
            ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
        ],
    )
    executor = ThreadPoolExecutor(
        max_workers=settings.workers, thread_name_prefix="forecaster-engine"
    )
    reads = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="forecaster-read")
    pb_grpc.add_CurveServiceServicer_to_server(
        CurveServicer(engine, executor, settings.max_points_per_batch, reads), server
    )
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
    bank = engine.models if engine.models is not None else ModelBank(None)
    log.info(
        "models",
        extra={
            "fields": {"dir": str(bank.folder), "loaded": bank.names(), "refused": bank.refused}
        },
    )
    port = server.add_insecure_port(settings.address)
    if port == 0:
        executor.shutdown()
        reads.shutdown()
        raise OSError(f"cannot listen on {settings.address}: is the port already in use?")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, port, health, engine, executor, bank, reads)
    if settings.models_reload_s > 0:
        running.watcher = asyncio.create_task(running._watch_models(settings.models_reload_s))
    running.store_watcher = asyncio.create_task(running._watch_store(settings.store_check_s))
    return running


def build_engine(settings: Settings) -> Engine:
    """The engine the settings describe: its store opened, its learned models loaded."""
    return Engine(
        open_store(settings.db_url, exclusive=True, pool_size=settings.db_pool_size),
        models=ModelBank.load(settings.models_dir),
        cache_size=settings.forecast_cache_size,
    )


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully (with the processes it
    started, when settings.processes > 1)."""
    processes.check(settings)
    engine = build_engine(settings)
    running = await start_server(engine, settings)
    # What start-up loaded (models, modules) lives as long as the process: out of the
    # collector's sight, so that its full passes under load stay short.
    gc.freeze()
    siblings = processes.start_siblings(settings)
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    loaded = ", ".join(running.models.names()) or "none"
    print(
        f"forecaster listening on {shown}:{running.port} (database {settings.db_url}; learned "
        f"models: {loaded})",
        flush=True,
    )
    for name, why in running.models.refused.items():
        print(f"forecaster: model {name} refused: {why}", flush=True)
    log.info(
        "serving", extra={"fields": {"address": f"{shown}:{running.port}", "db": settings.db_url}}
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if siblings:
        log.info("processes", extra={"fields": {"pids": [os.getpid()] + [p.pid for p in siblings]}})
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(running.reload_models()))
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_s": settings.grace_s}})
    await asyncio.gather(
        running.stop(settings.grace_s),
        loop.run_in_executor(None, processes.stop_siblings, siblings, settings.grace_s),
    )
