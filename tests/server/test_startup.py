"""Start-up: the port is bound before the models load (health NOT_SERVING meanwhile), a port in
use is one line naming the setting, logs are text on a terminal and JSON otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forecaster.config import Settings
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.app import build_engine, start_server
from forecaster.server.logs import resolve_format
from tests.conftest import start_live_server


def test_a_port_in_use_is_one_line_naming_the_port_and_the_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(port),
             "--db", f"sqlite:///{tmp_path}/p.db"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and "FORECASTER_PORT" in lines[0] and "--port" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.monotonic() - start < 60  # refused before any model is loaded


def test_health_is_not_serving_until_the_engine_is_attached(tmp_path):
    settings = Settings(
        host="127.0.0.1", port=0, db=f"sqlite:///{tmp_path}/h.db", models_dir="none"
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    running = on_loop(start_server(None, settings))
    try:
        with grpc.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest()
            assert health.Check(check).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.CurveServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListStudies(pb.ListStudiesRequest())
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in info.value.details()
            on_loop(running.attach(build_engine(settings)))
            assert health.Check(check).status == health_pb2.HealthCheckResponse.SERVING
            assert list(stub.ListStudies(pb.ListStudiesRequest()).studies) == []
    finally:
        on_loop(running.stop(1.0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def test_auto_logs_are_text_on_a_terminal_and_json_otherwise():
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty, open(os.devnull, "w") as pipe:
        assert resolve_format("auto", tty) == "text"
        assert resolve_format("auto", pipe) == "json"
        assert resolve_format("text", pipe) == "text" and resolve_format("json", tty) == "json"
    os.close(leader)


def test_serve_logs_json_lines_when_stderr_is_not_a_terminal(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0",
         "--db", f"sqlite:///{tmp_path}/j.db"],
        env={**os.environ, "FORECASTER_MODELS_DIR": "none"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "listening on" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    entries = [json.loads(line) for line in err.strip().splitlines()]
    assert {"bound; opening the store and loading the learned models (health NOT_SERVING)",
            "serving"} <= {e["msg"] for e in entries}  # fmt: skip


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry") is not None,
    reason="OpenTelemetry is installed: tracing is on, not skipped",
)
def test_tracing_without_opentelemetry_serves_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="forecaster.server")
    live = start_live_server(tmp_path / "t.db", models_dir="none", tracing=True)
    try:
        with grpc.insecure_channel(live.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            assert list(stub.ListStudies(pb.ListStudiesRequest()).studies) == []
    finally:
        live.stop()
    assert any("OpenTelemetry is not installed" in r.getMessage() for r in caplog.records)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.mark.skipif(
    not (installed("opentelemetry.instrumentation.grpc") and installed("opentelemetry.sdk")),
    reason="the tracing extra is not installed (pip install '.[tracing]')",
)
def test_tracing_makes_a_span_for_each_rpc(tmp_path):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    live = start_live_server(tmp_path / "t.db", models_dir="none", tracing=True)
    try:
        with grpc.insecure_channel(live.address) as channel:
            pb_grpc.CurveServiceStub(channel).ListStudies(pb.ListStudiesRequest())
    finally:
        live.stop()
    names = [span.name for span in exporter.get_finished_spans()]
    assert "/forecaster.v1.CurveService/ListStudies" in names
