"""Several server processes on one port (settings.processes): the first one starts the others.

Each process is a whole service (its own event loop, workers and engine) bound with
SO_REUSEPORT, so the kernel spreads new connections over them and the service uses more than
one core. They share one PostgreSQL database, as replicas on several machines do; SQLite has
one writer, so it is refused here rather than by its lock file in the second process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

from forecaster.config import ENV_PREFIX, Settings
from forecaster.errors import InvalidArgumentError

log = logging.getLogger("forecaster.server")

# Set in the environment of the processes the first one starts: they start no more.
SIBLING_VARIABLE = "FORECASTER_SIBLING_OF"
# Settings of ports that only the first process serves.
SINGLE_PROCESS_PORTS = ("http_port", "metrics_port")


def check(settings: Settings) -> None:
    """Refuses settings several processes cannot share, with what to change."""
    if settings.processes <= 1:
        return
    if settings.port == 0:
        raise InvalidArgumentError(
            "processes > 1 share one port: give it with --port (or FORECASTER_PORT), not 0."
        )
    if not settings.db_url.startswith(("postgresql://", "postgres://")):
        raise InvalidArgumentError(
            f"processes={settings.processes} needs a PostgreSQL database (a postgresql:// URL "
            "in --db): SQLite allows one service per file. Use processes=1 with SQLite."
        )


def start_siblings(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """Starts processes - 1 more `forecaster serve` with the same settings (none in a sibling)."""
    if settings.processes <= 1 or os.environ.get(SIBLING_VARIABLE):
        return []
    env = dict(os.environ)
    for field in dataclasses.fields(Settings):
        env[ENV_PREFIX + field.name.upper()] = str(getattr(settings, field.name))
    env[ENV_PREFIX + "DB"] = settings.db_url
    # The other ports (the dashboard's, the metrics') are the first process's alone: a sibling
    # binding them again would fail at start.
    for port in SINGLE_PROCESS_PORTS:
        env[ENV_PREFIX + port.upper()] = "0"
    env[SIBLING_VARIABLE] = str(os.getpid())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "forecaster.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,  # the first process prints the one "listening" line
        )
        for _ in range(settings.processes - 1)
    ]


def stop_siblings(siblings: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM (each drains as the first one does), then SIGKILL after the grace period."""
    for proc in siblings:
        if proc.poll() is None:
            proc.terminate()
    for proc in siblings:
        try:
            proc.wait(grace_s + 5)
        except subprocess.TimeoutExpired:
            log.warning("server process %d did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.wait()
