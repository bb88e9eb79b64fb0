"""The container runs exactly these commands: test them as the Dockerfile states them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.MULTILINE):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))
    health = json.loads(re.search(r"HEALTHCHECK .* CMD (\[.*\])$", text, re.MULTILINE).group(1))
    return env, entrypoint, health


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dockerfile_is_slim_non_root_with_a_volume():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"^USER forecaster", text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in text and "torch==2.13.0" in text
    env, _, _ = dockerfile()
    assert env["FORECASTER_DB"].startswith("sqlite:////data/")


def test_entrypoint_serves_and_healthcheck_passes(tmp_path):
    env, entrypoint, health = dockerfile()
    assert env["FORECASTER_HTTP_PORT"] == "8080"  # the image serves the dashboard
    port, http_port = free_port(), free_port()
    env.update(
        FORECASTER_PORT=str(port),
        FORECASTER_HTTP_PORT=str(http_port),
        FORECASTER_DB=f"sqlite:///{tmp_path}/c.db",
        FORECASTER_HOST="127.0.0.1",
    )  # loopback only in tests
    full_env = {**os.environ, **env}
    bin_dir = Path(sys.executable).parent

    def healthcheck() -> subprocess.CompletedProcess[str]:
        """The HEALTHCHECK's CMD, exactly as the Dockerfile states it."""
        return subprocess.run(
            [str(bin_dir / health[0]), *health[1:]],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    proc = subprocess.Popen(
        [str(bin_dir / entrypoint[0]), *entrypoint[1:]],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert f":{port}" in proc.stdout.readline()
        for _ in range(50):
            result = healthcheck()
            if result.returncode == 0:
                break
            time.sleep(0.1)
        assert result.returncode == 0 and "SERVING" in result.stdout
        assert f"dashboard on http://127.0.0.1:{http_port}/" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as reply:
            assert reply.status == 200 and "Studies" in reply.read().decode()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    result = healthcheck()
    assert result.returncode == 1
