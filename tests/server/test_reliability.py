"""Durability under SIGKILL, and many concurrent trainers, against the real server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, study_spec

pytestmark = pytest.mark.slow


def start_service(db: Path) -> tuple[subprocess.Popen[str], str]:
    """`forecaster serve` in a subprocess on a free port; returns it and its address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0", "--db", f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+):(\d+)", line)
    assert match, f"unexpected first line from serve: {line!r}"
    return proc, f"127.0.0.1:{match.group(2)}"


def check_consistent(db: Path) -> dict[str, list[int]]:
    """Each run's summary matches its points; returns the stored steps per run."""
    conn = sqlite3.connect(db)
    steps: dict[str, list[int]] = {}
    for run_id, name, n_points, last_step in conn.execute(
        "SELECT id, name, n_points, last_step FROM runs"
    ):
        got = [
            s
            for (s,) in conn.execute(
                "SELECT step FROM points WHERE run_id = ? ORDER BY step", (run_id,)
            )
        ]
        assert len(got) == n_points == len(set(got)), name
        assert (got[-1] if got else -1) == last_step, name
        steps[name] = got
    conn.close()
    return steps


def test_sigkill_loses_no_acknowledged_point(tmp_path):
    db = tmp_path / "kill.db"
    proc, address = start_service(db)
    acked: dict[str, set[int]] = {f"r{i}": set() for i in range(8)}
    stop = threading.Event()

    def trainer(run: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            stub.CreateStudy(pb.CreateStudyRequest(study=study_spec(max_step=100_000)))
            stub.StartRun(pb.StartRunRequest(study="sweep", run=pb.RunSpec(name=run)))
            step = 1
            while not stop.is_set() and step < 50_000:
                batch = list(range(step, step + 10))
                try:
                    stub.ReportMetrics(
                        pb.ReportMetricsRequest(study="sweep", run=run, points=points(batch)),
                        timeout=5,
                    )
                except grpc.RpcError:
                    return  # the server died under us: this batch was not acknowledged
                acked[run].update(batch)
                step += 10

    threads = [threading.Thread(target=trainer, args=(r,)) for r in acked]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(map(len, acked.values())) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert sum(map(len, acked.values())) >= 2000, "the trainers made too little progress"

    proc, address = start_service(db)  # restart on the same database
    try:
        stored = check_consistent(db)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            for run, steps in acked.items():
                assert steps <= set(stored[run]), f"{run}: acknowledged points were lost"
                got = stub.GetRun(pb.GetRunRequest(study="sweep", run=run)).run
                assert got.n_points == len(stored[run])
                # Reporting goes on where the store says the run is.
                nxt = got.last_step + 1
                stub.ReportMetrics(
                    pb.ReportMetricsRequest(study="sweep", run=run, points=points([nxt]))
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_fifty_concurrent_trainers_lose_and_duplicate_nothing(live_server):
    n_clients, n_points, batch = 50, 1000, 10

    async def trainer(stub: pb_grpc.CurveServiceStub, i: int) -> int:
        run = f"trainer-{i}"
        await stub.StartRun(pb.StartRunRequest(study="load", run=pb.RunSpec(name=run)))
        stored = 0
        for lo in range(1, n_points + 1, batch):
            resp = await stub.ReportMetrics(
                pb.ReportMetricsRequest(study="load", run=run, points=points(range(lo, lo + batch)))
            )
            stored += resp.n_stored
        return stored

    async def main() -> list[int]:
        async with grpc.aio.insecure_channel(live_server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            await stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("load", max_step=2000)))
            return await asyncio.wait_for(
                asyncio.gather(*(trainer(stub, i) for i in range(n_clients))), timeout=300
            )

    results = asyncio.run(main())
    assert results == [n_points] * n_clients
    stored = check_consistent(live_server.db_path)
    assert len(stored) == n_clients
    for steps in stored.values():
        assert steps == list(range(1, n_points + 1))
