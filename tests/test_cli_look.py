"""`forecaster studies`, `runs STUDY` and `why STUDY RUN` against a real service filled by two
demos (the second gets a study of its own), and `serve --http-port` serving the dashboard."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from forecaster.demo import STUDY, run_demo
from forecaster_client import Reporter
from tests.client.conftest import free_port
from tests.conftest import LiveServer, start_live_server
from tests.test_cli import forecaster_cli


@pytest.fixture(scope="module")
def demoed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, list[str]]]:
    server = start_live_server(tmp_path_factory.mktemp("look") / "s.db")
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        asyncio.run(run_demo(server.address, batch=200, out=out))
        outputs.append(out.getvalue())
    yield server, outputs
    server.stop()


def test_a_second_demo_on_the_same_service_runs_again_in_a_study_of_its_own(demoed):
    _, (first, second) = demoed
    assert "already ran" not in first
    assert f"a demo already ran on this service (study {STUDY!r}); this one is " in second
    for text in (first, second):
        final = text.split("final decisions:")[1]
        assert final.count("target_unreachable") == 3 and final.count("diverged") == 2


def test_studies_lists_both_demo_studies_with_their_runs_by_state(demoed):
    server, _ = demoed
    result = forecaster_cli("studies", "--address", server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["study", "metric", "direction", "budget", "target", "running",
                                "stopped", "finished", "failed"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {STUDY, f"{STUDY}-2"}
    # 6 runs: the winner finished (target reached), 5 stopped
    assert rows[STUDY][1:] == ["val_loss", "minimize", "2000", "2", "0", "5", "1", "0"]


def test_runs_shows_each_run_with_its_decision(demoed):
    server, _ = demoed
    result = forecaster_cli("runs", STUDY, "--address", server.address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "final: median [5%, 95%]" in out.splitlines()[0]
    assert re.search(r"lr=1e-2 \(diverges\)\s+stopped\s+\d+\s+.*stop / diverged", out)
    assert out.count("stop / target_unreachable") == 3


def test_why_prints_the_decision_history_as_a_table(demoed):
    server, _ = demoed
    result = forecaster_cli("why", STUDY, "lr=1e-4", "--address", server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["step", "time", "(UTC)", "action"]
    body = lines[2:]
    assert len(body) >= 2 and "continue" in body[0].split()
    assert body[-1].split()[3:5] == ["stop", "target_unreachable"]
    assert "P(reach 2 by step 2000)" in body[-1]


def test_an_unknown_study_is_one_line_naming_the_address(demoed):
    server, _ = demoed
    result = forecaster_cli("runs", "nope", "--address", server.address)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"forecaster: error: {server.address}: NOT_FOUND: no study named 'nope'; create it "
        "with CreateStudy first."
    )


def test_serve_with_http_port_serves_the_dashboard(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0", "--db",
         f"sqlite:///{tmp_path}/s.db", "--http-port", str(port), "--allow-manual-stop"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert "listening on" in proc.stdout.readline()
        assert proc.stdout.readline().strip() == f"forecaster dashboard on http://127.0.0.1:{port}/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as reply:
            assert reply.status == 200 and "No study yet" in reply.read().decode()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_dashboard_settings_from_the_environment():
    from forecaster.config import Settings
    from forecaster.errors import InvalidArgumentError

    s = Settings.from_env(
        {"FORECASTER_HTTP_PORT": "8080", "FORECASTER_ALLOW_MANUAL_STOP": "true",
         "FORECASTER_DASHBOARD_REFRESH_S": "2.5"}
    )  # fmt: skip
    assert (s.http_port, s.allow_manual_stop, s.dashboard_refresh_s) == (8080, True, 2.5)
    defaults = Settings.from_env({})
    assert (defaults.http_port, defaults.allow_manual_stop) == (0, False)
    assert Settings.from_env({"FORECASTER_ALLOW_MANUAL_STOP": "0"}).allow_manual_stop is False
    with pytest.raises(InvalidArgumentError, match="FORECASTER_ALLOW_MANUAL_STOP"):
        Settings.from_env({"FORECASTER_ALLOW_MANUAL_STOP": "maybe"})
    with pytest.raises(InvalidArgumentError, match="http_port"):
        Settings(http_port=70000)


def test_studies_reads_every_page_of_studies_and_runs(tmp_path):
    """The service pages its listings (page_size 2 here): every study and run is counted."""
    from forecaster_client import StudyClient

    server = start_live_server(tmp_path / "paged.db", page_size=2, models_dir="none")
    try:
        for i in range(3):
            for r in range(3):
                with Reporter(server.address, f"study-{i}", f"run-{r}", max_step=100) as rep:
                    rep.report(1, 1.0)
                    assert rep.flush(10)
        result = forecaster_cli("studies", "--address", server.address)
        assert result.returncode == 0, result.stderr
        rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
        assert set(rows) == {"study-0", "study-1", "study-2"}
        assert all(int(row[-2]) == 3 for row in rows.values())  # 3 finished runs each
        with StudyClient(server.address) as client:
            assert [s.name for s in client.studies()] == ["study-0", "study-1", "study-2"]
    finally:
        server.stop()


def test_runs_rank_prints_the_running_and_paused_runs_best_first(tmp_path):
    server = start_live_server(tmp_path / "s.db")
    try:
        for run, floor, upto in (("best", 2.0, 1000), ("bad", 4.0, 400), ("good", 1.9, 300)):
            reporter = Reporter(
                server.address, "freeze", run, max_step=1000, policy_params={"pause": True}
            )
            for s in range(10, upto + 1, 10):
                reporter.report(s, floor + 3.0 * (s / 10.0) ** -0.5)
                if s % 50 == 0:
                    assert reporter.flush(20)
            reporter.close(state="finished" if run == "best" else None)
        result = forecaster_cli("runs", "freeze", "--rank", "--address", server.address)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("incumbent 2.")
        assert lines[1].split()[:5] == ["rank", "run", "state", "step", "left"]
        rows = [line.split() for line in lines[3:]]
        assert [r[:3] for r in rows] == [["1", "good", "running"], ["2", "bad", "paused"]]
        assert rows[1][-3:] == ["pause", "/", "unpromising"]
        bad = forecaster_cli(
            "runs", "freeze", "--rank", "--limit", "-1", "--address", server.address
        )
        assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        server.stop()
