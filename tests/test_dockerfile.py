"""The container runs exactly these commands: test them as the Dockerfile states them.

No registry is reachable for `docker build` here, so the Dockerfile is read as text: its
ENTRYPOINT, HEALTHCHECK and ENV lines run against this checkout, and (slow) its install lines
run as they are written into a fresh virtual environment, which then serves."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = "/opt/venv"  # where the Dockerfile builds its environment


@dataclass
class Stage:
    base: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    stages: list[Stage]
    entrypoint: list[str]
    health: list[str]
    text: str

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def read_dockerfile() -> Dockerfile:
    raw = (REPO / "Dockerfile").read_text()
    text = raw.replace("\\\n", " ")
    stages: list[Stage] = []
    for line in text.splitlines():
        words = line.split(maxsplit=1)
        if not words or words[0].startswith("#"):
            continue
        op, rest = words[0], words[1] if len(words) > 1 else ""
        if op == "FROM":
            stages.append(Stage(rest.split()[0]))
        elif op == "ARG":
            name, _, default = rest.partition("=")
            stages[-1].args[name] = default
        elif op == "ENV":
            stages[-1].env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif op == "RUN":
            stages[-1].runs.append(rest)
        elif op == "COPY" and not rest.startswith("--from"):
            stages[-1].copies.append(rest.split())
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))
    health = json.loads(re.search(r"HEALTHCHECK .* CMD (\[.*\])$", text, re.MULTILINE).group(1))
    return Dockerfile(stages, entrypoint, health, raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dockerfile_is_slim_non_root_multi_stage_with_cpu_torch():
    d = read_dockerfile()
    assert all(s.base == "python:3.11-slim" for s in d.stages) and len(d.stages) == 2
    assert re.search(r"^USER forecaster", d.text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in d.text and "COPY --from=build /opt/venv /opt/venv" in d.text
    build = d.stages[0]
    torch_line = next(r for r in build.runs if "torch==2.13.0" in r)
    assert "$TORCH_INDEX_URL" in torch_line and build.args["TORCH_INDEX_URL"].endswith("/cpu")
    assert d.final.env["FORECASTER_DB"].startswith("sqlite:////data/")
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", "tests", "benchmarks"} <= set(ignored)
    for copy in build.copies:  # everything the image copies is not ignored
        assert not set(copy[:-1]) & set(ignored)


def serve_and_check(bin_dir: Path, tmp_path: Path, extra_env: dict[str, str]) -> None:
    """ENTRYPOINT from bin_dir with the image's ENV, then its HEALTHCHECK: SERVING, and not
    after SIGTERM."""
    d = read_dockerfile()
    env = {k: v for k, v in d.final.env.items() if k != "PATH"}  # PATH: bin_dir stands for it
    assert env["FORECASTER_HTTP_PORT"] == "8080"  # the image serves the dashboard
    port, http_port = free_port(), free_port()
    env.update(
        FORECASTER_PORT=str(port),
        FORECASTER_HTTP_PORT=str(http_port),
        FORECASTER_DB=f"sqlite:///{tmp_path}/c.db",
        FORECASTER_HOST="127.0.0.1",  # loopback only in tests
    )
    full_env = {**os.environ, **env, **extra_env}

    def healthcheck() -> subprocess.CompletedProcess[str]:
        """The HEALTHCHECK's CMD, exactly as the Dockerfile states it."""
        return subprocess.run(
            [str(bin_dir / d.health[0]), *d.health[1:]],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(bin_dir / d.entrypoint[0]), *d.entrypoint[1:]],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        line = proc.stdout.readline()
        assert f":{port}" in line, log.read_text()[-3000:]  # the first line: serving
        assert f"dashboard on http://127.0.0.1:{http_port}/" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as reply:
            assert reply.status == 200 and "Studies" in reply.read().decode()
        result = healthcheck()
        assert result.returncode == 0 and "SERVING" in result.stdout, result.stderr
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
    result = healthcheck()
    assert result.returncode == 1


def test_entrypoint_serves_and_healthcheck_passes(tmp_path):
    serve_and_check(Path(sys.executable).parent, tmp_path, {})


@pytest.mark.slow
def test_install_lines_build_a_fresh_environment_that_serves(tmp_path):
    """The build stage's RUN lines as written (ARG defaults, COPY'd files), into a new venv
    in place of /opt/venv; then the image's commands from that venv. Bounded by timeouts."""
    d = read_dockerfile()
    build = d.stages[0]
    context = tmp_path / "src"
    context.mkdir()
    for *sources, _dest in build.copies:
        for source in sources:
            path = REPO / source
            target = context / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, target)
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        **build.args,
        **build.env,
        "PIP_RETRIES": "0",  # an unreachable index fails at once instead of retrying
        "PYTHONPATH": "",  # the fresh environment must stand on its own
    }
    start = time.monotonic()
    for run in build.runs:
        command = run.replace(VENV, str(venv))
        if command.startswith("python -m venv"):
            command = command.replace("python", shlex.quote(sys.executable), 1)
        result = subprocess.run(
            command, shell=True, cwd=context, env=env, capture_output=True, text=True,
            timeout=1200,
        )  # fmt: skip
        assert result.returncode == 0, f"{run}\n{result.stderr[-3000:]}"
    assert time.monotonic() - start < 1500
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert version.stdout.strip().startswith("2.13.0")
    serve_and_check(venv / "bin", tmp_path, {"PYTHONPATH": ""})
