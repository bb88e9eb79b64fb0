"""Several server processes on one port (settings.processes): the first one starts the others.

Each process is a whole service (its own event loop, workers and engine) bound with
SO_REUSEPORT, so the kernel spreads new connections over them and the service uses more than
one core. They share one PostgreSQL database, as replicas on several machines do; SQLite has
one writer, so it is refused here rather than by its lock file in the second process. The
dashboard's and the metrics' ports are shared too, every process serving them; the metrics
served are the sum over the processes (their values in one folder, `prepare`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile

from forecaster.config import ENV_PREFIX, Settings
from forecaster.errors import InvalidArgumentError

log = logging.getLogger("forecaster.server")

# Set in the environment of the processes the first one starts: they start no more.
SIBLING_VARIABLE = "FORECASTER_SIBLING_OF"
# prometheus_client's multiprocess mode reads its folder from this variable at import.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


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


def prepare(settings: Settings) -> str:
    """In the first of several processes with metrics on: a fresh folder for every process's
    metric values, in the environment the siblings inherit; returns it ("" when not needed).
    Called before prometheus_client counts anything (its value class is chosen from the
    environment)."""
    if settings.processes <= 1 or not settings.metrics_port or os.environ.get(SIBLING_VARIABLE):
        return ""
    folder = tempfile.mkdtemp(prefix="forecaster-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = folder
    _choose_value_class()
    return folder


def _choose_value_class() -> None:
    """prometheus_client chose its value class (in memory or in the folder's files) when it was
    imported: choose again from the environment as it is now."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        setattr(values, "ValueClass", values.get_value_class())  # noqa: B010 - mypy: a ModuleType


def forget(folder: str) -> None:
    """Removes the metrics folder prepare made, once every process has stopped."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(METRICS_DIR_VARIABLE, None)
        _choose_value_class()


def start_siblings(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """Starts processes - 1 more `forecaster serve` with the same settings (none in a sibling)."""
    if settings.processes <= 1 or os.environ.get(SIBLING_VARIABLE):
        return []
    env = dict(os.environ)
    for field in dataclasses.fields(Settings):
        env[ENV_PREFIX + field.name.upper()] = str(getattr(settings, field.name))
    env[ENV_PREFIX + "DB"] = settings.db_url
    env[SIBLING_VARIABLE] = str(os.getpid())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "forecaster.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,  # the first process prints the one "listening" line
        )
        for _ in range(settings.processes - 1)
    ]


def follow_parent() -> None:
    """In a sibling: SIGTERM (a graceful drain) when the first process dies, even by SIGKILL,
    so that no sibling goes on serving the port alone (Linux; elsewhere nothing is done)."""
    parent = os.environ.get(SIBLING_VARIABLE)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the line above: stop now
        os.kill(os.getpid(), signal.SIGTERM)


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
