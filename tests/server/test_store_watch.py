"""The database file watched, against the real server: a deleted or replaced SQLite file stops
the acknowledgements, a second service on the same file and a corrupt file are refused at start,
and work whose deadline passed is dropped before it touches the store."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forecaster.curves import Direction
from forecaster.errors import StoreUnavailableError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.store import StudySpec
from forecaster.store.sqlite import SqliteStore
from tests.conftest import LiveServer, points, start_live_server, study_spec


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path / "service.db", store_check_s=0.1)
    yield server
    server.stop()


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _wait_health(address: str, status: int, within_s: float = 10.0) -> int:
    end = time.monotonic() + within_s
    got = _health(address)
    while got != status and time.monotonic() < end:
        time.sleep(0.05)
        got = _health(address)
    return got


def _report(stub: pb_grpc.CurveServiceStub, steps: range) -> pb.ReportMetricsResponse:
    return stub.ReportMetrics(
        pb.ReportMetricsRequest(study="s", run="r", points=points(steps)), timeout=10
    )


def _setup(stub: pb_grpc.CurveServiceStub) -> None:
    stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("s")))
    stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="r")))
    assert _report(stub, range(1, 11)).n_stored == 10


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_file_stops_the_acknowledgements(watched, tmp_path, how):
    db = watched.db_path
    with grpc.insecure_channel(watched.address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        _setup(stub)
        assert _health(watched.address) == health_pb2.HealthCheckResponse.SERVING
        if how == "deleted":
            db.unlink()
        else:
            other = tmp_path / "other.db"
            SqliteStore(other).close()
            shutil.move(other, db)  # rename over it: a new inode at the same path
        with pytest.raises(grpc.RpcError) as refused:
            _report(stub, range(11, 21))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert str(db) in refused.value.details() and how in refused.value.details()
        assert (
            _wait_health(watched.address, health_pb2.HealthCheckResponse.NOT_SERVING)
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )


def test_a_second_service_on_the_same_file_is_refused(watched):
    with pytest.raises(StoreUnavailableError, match="in use by another forecaster service"):
        start_live_server(watched.db_path)
    # The command line says it in one line, without a traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0", "--db",
         str(watched.db_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "in use by another forecaster service" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _health(watched.address) == health_pb2.HealthCheckResponse.SERVING


def test_the_lock_goes_with_the_service(tmp_path):
    first = start_live_server(tmp_path / "service.db")
    first.stop()
    second = start_live_server(tmp_path / "service.db")  # the first one let go
    second.stop()


def _corrupt(db: Path) -> None:
    """A real database whose table pages are overwritten with noise, as a bad disk leaves it."""
    store = SqliteStore(db)
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    store.close()
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    n_pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        for page in range(1, n_pages):  # keep the header page, break the others
            f.seek(page * page_size)
            f.write(bytes(range(256)) * (page_size // 256))


@pytest.mark.parametrize("damage", ["pages", "not a database"])
def test_a_corrupt_database_is_refused_at_start_saying_what_to_do(tmp_path, damage):
    db = tmp_path / "service.db"
    if damage == "pages":
        _corrupt(db)
    else:
        db.write_bytes(b"this is no database, just text" * 200)
    with pytest.raises(StoreUnavailableError) as refused:
        start_live_server(db)
    message = str(refused.value)
    assert str(db) in message and "corrupt" in message
    assert "restore it from a backup" in message and ".recover" in message


def test_work_whose_deadline_passed_is_dropped_before_the_store(tmp_path):
    server = start_live_server(tmp_path / "service.db", workers=1)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            _setup(stub)
            busy = server.running.executor.submit(time.sleep, 1.5)  # the only worker
            with pytest.raises(grpc.RpcError) as late:
                stub.ReportMetrics(
                    pb.ReportMetricsRequest(study="s", run="r", points=points(range(11, 21))),
                    timeout=0.3,
                )
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            busy.result()
            time.sleep(0.3)  # the dropped work would have run by now
            run = stub.GetRun(pb.GetRunRequest(study="s", run="r"), timeout=10).run
            assert run.n_points == 10  # nothing of the late batch stored
    finally:
        server.stop()


def test_reads_after_a_deletion_leave_no_new_empty_file(watched):
    db = watched.db_path
    with grpc.insecure_channel(watched.address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        _setup(stub)
        db.unlink()
        for _ in range(20):  # reads on every worker thread, some on fresh connections
            try:
                stub.GetRun(pb.GetRunRequest(study="s", run="r"), timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert not db.exists()
