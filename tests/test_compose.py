"""deploy/compose.yaml runs the image's own commands: parse it, then run them as it states them
(docker is not available here): the image's ENTRYPOINT with the compose environment, against a
real PostgreSQL server in place of the `postgres` service, and the compose health checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.postgres import PostgresServer
from tests.test_dockerfile import free_port, read_dockerfile

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "deploy" / "compose.yaml"


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """The image's final ENV (PATH left out: the test's own environment stands for it),
    ENTRYPOINT and HEALTHCHECK command."""
    d = read_dockerfile()
    env = {k: v for k, v in d.final.env.items() if k != "PATH"}
    return env, d.entrypoint, d.health


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default}."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), str(value))


def test_compose_builds_this_image_and_keeps_its_commands():
    services = compose()["services"]
    assert set(services) == {"postgres", "forecaster"}
    app = services["forecaster"]
    assert (COMPOSE.parent / app["build"]).resolve() == REPO  # the Dockerfile of this repo
    assert "command" not in app and "entrypoint" not in app  # the image's ENTRYPOINT runs
    env, _, health = dockerfile()
    assert app["healthcheck"]["test"] == ["CMD", *health]  # the image's own health check
    assert app["ports"] == [f"{env['FORECASTER_PORT']}:{env['FORECASTER_PORT']}"]
    assert app["stop_signal"] == "SIGTERM"
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = interpolate(app["environment"]["FORECASTER_DB"], {})
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert int(app["environment"]["FORECASTER_PROCESSES"]) == 2
    db = services["postgres"]["environment"]
    assert url == (
        f"postgresql://{db['POSTGRES_USER']}:{interpolate(db['POSTGRES_PASSWORD'], {})}"
        f"@postgres:5432/{db['POSTGRES_DB']}"
    )


@pytest.mark.slow
def test_compose_commands_serve_two_processes_on_postgres(postgres_server: PostgresServer):
    services = compose()["services"]
    db = services["postgres"]["environment"]
    user, password, name = (
        db["POSTGRES_USER"],
        interpolate(db["POSTGRES_PASSWORD"], {}),
        (db["POSTGRES_DB"]),
    )
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"DROP ROLE IF EXISTS {user}")
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {name} OWNER {user}")
    # The postgres service's health check, as compose runs it (host and port: the test's).
    isready = services["postgres"]["healthcheck"]["test"][1:]
    ready = subprocess.run(
        [str(postgres_server.bin_dir / isready[0]), *isready[1:], "-h", "127.0.0.1", "-p",
         str(postgres_server.port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ready.returncode == 0, ready.stdout + ready.stderr

    image_env, entrypoint, health = dockerfile()
    app = services["forecaster"]
    port = free_port()
    env = {**os.environ, **image_env}
    env.update({k: interpolate(v, {}) for k, v in app["environment"].items()})
    # The compose network's `postgres:5432` is the test's server on loopback.
    env["FORECASTER_DB"] = env["FORECASTER_DB"].replace(
        "@postgres:5432/", f"@127.0.0.1:{postgres_server.port}/"
    )
    env.update(FORECASTER_PORT=str(port), FORECASTER_HOST="127.0.0.1", FORECASTER_MODELS_DIR="none")
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / entrypoint[0]), *entrypoint[1:]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and f":{port}" in proc.stdout.readline()
        test = app["healthcheck"]["test"][1:]
        for _ in range(100):
            result = subprocess.run(
                [str(bin_dir / test[0]), *test[1:]],
                env=env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if result.returncode == 0:
                break
            time.sleep(0.1)
        assert result.returncode == 0 and "SERVING" in result.stdout
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == int(app["environment"]["FORECASTER_PROCESSES"]) - 1
        with psycopg.connect(env["FORECASTER_DB"]) as conn:  # migrated by the service
            assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] >= 1
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
