"""Two real service processes (`forecaster serve`) on one PostgreSQL database: the same answers
from both, and no point lost or duplicated while both take reports for the same runs, retries
included."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, study_spec
from tests.postgres import PostgresServer

pytestmark = pytest.mark.slow


def start_replica(db_url: str) -> tuple[subprocess.Popen[str], str]:
    """`forecaster serve` on a free port against db_url; returns it and its address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0", "--db", db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "FORECASTER_MODELS_DIR": "none"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+):(\d+)", line)
    assert match, f"unexpected first line from serve: {line!r}"
    return proc, f"127.0.0.1:{match.group(2)}"


@pytest.fixture
def replicas(postgres_server: PostgresServer) -> Iterator[tuple[str, list[str]]]:
    url = postgres_server.fresh_url()
    started = [start_replica(url) for _ in range(2)]
    yield url, [address for _, address in started]
    for proc, _ in started:
        proc.terminate()
        proc.wait(30)


def test_two_replicas_lose_and_duplicate_nothing_and_answer_alike(replicas):
    url, addresses = replicas
    channels = [grpc.insecure_channel(a) for a in addresses]
    stubs = [pb_grpc.CurveServiceStub(c) for c in channels]
    try:
        for stub in stubs:  # both create the same study and runs: idempotent across replicas
            stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("s", max_step=2000)))
            for run in ("shared", "a", "b"):
                stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name=run)))
        errors: list[BaseException] = []
        n_batches, size = 60, 5

        def trainer(run: str, offset: int) -> None:
            try:
                for i in range(n_batches):
                    steps = range(1 + i * size, 1 + (i + 1) * size)
                    request = pb.ReportMetricsRequest(study="s", run=run, points=points(steps))
                    # Each batch to one replica, then retried on the other (a lost answer).
                    for k in (0, 1):
                        stubs[(i + offset + k) % 2].ReportMetrics(request, timeout=30)
            except BaseException as e:  # pragma: no cover - shown by the assert
                errors.append(e)

        threads = [
            threading.Thread(target=trainer, args=(run, offset))
            for run, offset in (("shared", 0), ("shared", 1), ("a", 0), ("b", 1))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        expected = list(range(1, n_batches * size + 1))
        with psycopg.connect(url) as conn:
            for run in ("shared", "a", "b"):
                stored = [
                    step
                    for (step,) in conn.execute(
                        "SELECT p.step FROM points p JOIN runs r ON p.run_id = r.id "
                        "WHERE r.name = %s ORDER BY p.step",
                        (run,),
                    )
                ]
                assert stored == expected, run
        for run in ("shared", "a", "b"):
            got = [s.GetRun(pb.GetRunRequest(study="s", run=run), timeout=10).run for s in stubs]
            assert got[0] == got[1] and got[0].n_points == len(expected)
            decisions = [
                s.GetDecision(pb.GetDecisionRequest(study="s", run=run), timeout=30).decision
                for s in stubs
            ]
            assert decisions[0] == decisions[1]
        listed = [s.ListRuns(pb.ListRunsRequest(study="s"), timeout=10).runs for s in stubs]
        assert listed[0] == listed[1] and len(listed[0]) == 3
        studies = [s.GetStudy(pb.GetStudyRequest(name="s"), timeout=10).study for s in stubs]
        assert studies[0] == studies[1]
    finally:
        for c in channels:
            c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _answers(address: str, tries: int) -> int:
    """How many fresh connections (each a new TCP connection) get an answer within 3 s."""
    answered = 0
    for _ in range(tries):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as c:
            try:
                pb_grpc.CurveServiceStub(c).ListStudies(pb.ListStudiesRequest(), timeout=3)
                answered += 1
            except grpc.RpcError:
                pass
    return answered


def test_processes_share_one_port_and_stop_together(postgres_server: PostgresServer):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(port), "--processes",
         "2", "--db", postgres_server.fresh_url()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "FORECASTER_MODELS_DIR": "none"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while not _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (sibling,) = _children(proc.pid)
        while _answers(address, 1) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the sibling binds after its own start-up
        # With the first process frozen, the sibling alone answers on the same port: new
        # connections the kernel gives the frozen one time out, the others are served.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            served = _answers(address, 12)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert served >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not Path(f"/proc/{sibling}").exists() or _zombie(sibling)
    finally:
        if proc.poll() is None:
            proc.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_processes_with_sqlite_are_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(_free_port()),
         "--processes", "2", "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "needs a PostgreSQL database" in proc.stderr
    assert "Traceback" not in proc.stderr


def _listeners(pid: int, port: int) -> bool:
    import psutil

    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.Process(pid).net_connections("tcp")
    )


def test_every_process_serves_the_dashboard_and_the_summed_metrics(postgres_server):
    port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(port), "--processes",
         "2", "--db", postgres_server.fresh_url(), "--http-port", str(http_port),
         "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "FORECASTER_MODELS_DIR": "none"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while not _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (sibling,) = _children(proc.pid)
        while not _listeners(sibling, metrics_port) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in (proc.pid, sibling):  # both processes listen on all three ports
            for p in (port, http_port, metrics_port):
                assert _listeners(pid, p), f"process {pid} does not serve port {p}"
        address = f"127.0.0.1:{port}"
        # A process listens before it serves (UNAVAILABLE while it starts): wait until fresh
        # connections, spread over both by the kernel, are all answered.
        while _answers(address, 8) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        with grpc.insecure_channel(address) as ch:
            stub = pb_grpc.CurveServiceStub(ch)
            stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("m", max_step=5000)))
            stub.StartRun(pb.StartRunRequest(study="m", run=pb.RunSpec(name="r")))
        n_calls, size = 24, 5
        for i in range(n_calls):  # a connection each: the kernel spreads them over both
            own = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(address, options=own) as ch:
                steps = range(1 + i * size, 1 + (i + 1) * size)
                request = pb.ReportMetricsRequest(study="m", run="r", points=points(steps))
                pb_grpc.CurveServiceStub(ch).ReportMetrics(request, timeout=30)
        # Each scrape (a new connection, either process) shows the whole service's counts.
        for _ in range(6):
            text = _get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert _sample(text, "forecaster_points_stored_total") == n_calls * size
            method = "/forecaster.v1.CurveService/ReportMetrics"
            reports = _sample(text, "forecaster_rpcs_total", method=method, code="OK")
            assert reports == n_calls
        for _ in range(6):  # the study's row on the studies page, from either process
            assert ">m</a></td>" in _get(f"http://127.0.0.1:{http_port}/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()  # its sibling with it
            proc.wait(60)


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called name whose labels include labels, in a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert values, f"{name} {labels} not in the metrics"
    return sum(values)


def test_a_sibling_stops_when_the_first_process_is_killed(postgres_server):
    # Before: SIGKILL of the first process left its sibling serving the port alone, forever.
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(port), "--processes",
         "2", "--db", postgres_server.fresh_url()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "FORECASTER_MODELS_DIR": "none"},
    )  # fmt: skip
    sibling = 0
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while not _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (sibling,) = _children(proc.pid)
        while not _listeners(sibling, port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listeners(sibling, port)
        proc.kill()
        proc.wait(30)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{sibling}").exists() and not _zombie(sibling):
            assert time.monotonic() < deadline, "the sibling outlived the first process"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        if sibling and Path(f"/proc/{sibling}").exists() and not _zombie(sibling):
            os.kill(sibling, signal.SIGKILL)
