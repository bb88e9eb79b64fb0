"""The command line as a user runs it: serve (and its shutdown), health, demo."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forecaster.config import Settings
from forecaster.errors import InvalidArgumentError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.server.test_reliability import start_service


def forecaster_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "forecaster.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_settings_from_env_then_flags():
    s = Settings.from_env(
        {"FORECASTER_PORT": "6000", "FORECASTER_DB": "sqlite:///x.db"}, port=7000, host=None
    )
    assert (s.port, s.db_url, s.host) == (7000, "sqlite:///x.db", "127.0.0.1")
    assert Settings.from_env({}).db_url.endswith("forecaster.db")
    with pytest.raises(InvalidArgumentError, match="FORECASTER_PORT"):
        Settings.from_env({"FORECASTER_PORT": "http"})
    with pytest.raises(InvalidArgumentError, match="port"):
        Settings(port=70000)


def test_serve_health_and_graceful_sigterm(tmp_path):
    db = tmp_path / "serve.db"
    proc, address = start_service(db)
    try:
        # The container's HEALTHCHECK runs exactly this command.
        ok = forecaster_cli("health", "--address", address)
        assert ok.returncode == 0 and "SERVING" in ok.stdout
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            stub.CreateStudy(
                pb.CreateStudyRequest(
                    study=pb.StudySpec(name="s", metric="loss", direction=pb.DIRECTION_MINIMIZE)
                )
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    # Closed cleanly: the WAL was checkpointed into the database file.
    assert (
        not (tmp_path / "serve.db-wal").exists() or (tmp_path / "serve.db-wal").stat().st_size == 0
    )
    assert sqlite3.connect(db).execute("SELECT name FROM studies").fetchall() == [("s",)]
    down = forecaster_cli("health", "--address", address, "--timeout", "1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


def test_health_goes_not_serving_on_shutdown(tmp_path):
    from tests.conftest import start_live_server

    server = start_live_server(tmp_path / "h.db")
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.stop(grace_s=1.0)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_serve_reports_a_bad_database_url():
    result = forecaster_cli("serve", "--port", "0", "--db", "mysql://nowhere")
    assert result.returncode == 2 and "sqlite:///" in result.stderr


def test_demo_shows_forecasts_and_every_kind_of_decision(tmp_path):
    result = forecaster_cli("demo", "--db", f"sqlite:///{tmp_path}/demo.db", timeout=300)
    assert result.returncode == 0, result.stderr
    final = result.stdout.split("final decisions:")[1]
    assert "winner)     STOP     target_reached" in final
    assert final.count("target_unreachable") == 3 and final.count("diverged") == 2
    assert "forecast at 2000" in result.stdout and "warmup" in result.stdout
    assert "simulated training" in result.stderr  # the progress bar
