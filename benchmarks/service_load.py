"""Service throughput and latency under N concurrent simulated trainers, beside Optuna.

Starts `forecaster serve` in its own process on a loopback port with a fresh SQLite file,
runs N trainers (asyncio, one client process) that each report P points in batches of B with
ReportMetrics, then ask GetDecision G times each (the forecast is cached by then). Then,
in the same run, Optuna with RDB storage on SQLite does trial.report + trial.should_prune for
points of the same curves, bounded in count and time. Prints a table and writes it to
docs/benchmarks.md.

    python benchmarks/service_load.py [--trainers 50] [--points 1000] [--batch 10]

With --scale, instead: 1,000 trainers each sending 10 points every 2 s, and a closed loop, on
SQLite and on PostgreSQL (one process, and two on one port); ReportMetrics latency against the
size of the study (10 to 10,000 runs); the first decision on a 10^6-point run after a restart.

    python benchmarks/service_load.py --scale [--duration 30] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from forecaster.server._proto import forecaster_pb2 as pb  # noqa: E402
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc  # noqa: E402
from forecaster.server.servicer import ACK_EVERY_BATCH  # noqa: E402


def curve(i: int, steps: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(i)
    return 2.0 + rng.uniform(0, 1) + 3.0 * (steps / 10.0) ** -0.5 + rng.normal(0, 0.01, len(steps))


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forecaster.cli",
            "serve",
            "--port",
            "0",
            "--db",
            f"sqlite:///{db}",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    match = re.search(r":(\d+) ", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("the service did not start")
    return proc, f"127.0.0.1:{match.group(1)}"


async def run_load(
    address: str,
    trainers: int,
    n_points: int,
    batch: int,
    decisions: int,
    time_limit_s: float,
    study: str,
    offered_points_per_s: float = 0.0,
) -> dict[str, float]:
    """Closed loop (each trainer sends its next batch as soon as the last is answered) when
    offered_points_per_s is 0; else open loop: each trainer sends on a fixed schedule."""
    report_ms: list[float] = []
    decision_ms: list[float] = []
    deadline = time.monotonic() + time_limit_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        await stub.CreateStudy(
            pb.CreateStudyRequest(
                study=pb.StudySpec(
                    name=study,
                    metric="val_loss",
                    direction=pb.DIRECTION_MINIMIZE,
                    max_step=n_points * 2,
                    target=2.2,
                )
            )
        )

        async def trainer(i: int) -> int:
            run = f"trainer-{i}"
            await stub.StartRun(pb.StartRunRequest(study=study, run=pb.RunSpec(name=run)))
            steps = np.arange(1, n_points + 1)
            values = curve(i, steps)
            stored = 0
            period = trainers * batch / offered_points_per_s if offered_points_per_s else 0.0
            start = time.monotonic() + (i / trainers) * period  # spread the trainers out
            for k, lo in enumerate(range(0, n_points, batch)):
                if time.monotonic() > deadline:
                    break
                if period:
                    await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))
                pts = [
                    pb.Point(step=int(s), value=float(v))
                    for s, v in zip(steps[lo : lo + batch], values[lo : lo + batch], strict=True)
                ]
                t0 = time.perf_counter()
                resp = await stub.ReportMetrics(
                    pb.ReportMetricsRequest(study=study, run=run, points=pts)
                )
                report_ms.append((time.perf_counter() - t0) * 1e3)
                stored += resp.n_stored
            return stored

        t0 = time.perf_counter()
        stored = await asyncio.gather(*(trainer(i) for i in range(trainers)))
        ingest_s = time.perf_counter() - t0

        async def ask(i: int) -> None:
            period = trainers / offered_points_per_s * batch if offered_points_per_s else 0.0
            start = time.monotonic() + (i / trainers) * period
            for k in range(decisions):
                if period:
                    await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))
                t = time.perf_counter()
                await stub.GetDecision(pb.GetDecisionRequest(study=study, run=f"trainer-{i}"))
                decision_ms.append((time.perf_counter() - t) * 1e3)

        await asyncio.gather(*(ask(i) for i in range(trainers)))
    return {
        "points": float(sum(stored)),
        "seconds": ingest_s,
        "points_per_s": sum(stored) / ingest_s,
        "report_p50_ms": float(np.percentile(report_ms, 50)),
        "report_p99_ms": float(np.percentile(report_ms, 99)),
        "decision_p50_ms": float(np.percentile(decision_ms, 50)),
        "decision_p99_ms": float(np.percentile(decision_ms, 99)),
    }


def run_optuna(
    db: Path, trainers: int, n_points: int, max_points: int, time_limit_s: float
) -> dict[str, float]:
    """trial.report + trial.should_prune per point, Optuna RDB storage on SQLite."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study = optuna.create_study(
        storage=storage, study_name="load", pruner=optuna.pruners.MedianPruner()
    )
    per_trial = max(1, min(n_points, max_points // trainers))
    latencies: list[float] = []
    done = 0
    deadline = time.monotonic() + time_limit_s
    t0 = time.perf_counter()
    for i in range(trainers):
        trial = study.ask()
        values = curve(i, np.arange(1, per_trial + 1))
        for step, value in enumerate(values, start=1):
            t = time.perf_counter()
            trial.report(float(value), step)
            trial.should_prune()
            latencies.append((time.perf_counter() - t) * 1e3)
            done += 1
            if time.monotonic() > deadline:
                break
        study.tell(trial, float(values[-1]))
        if time.monotonic() > deadline:
            break
    seconds = time.perf_counter() - t0
    return {
        "points": float(done),
        "seconds": seconds,
        "points_per_s": done / seconds,
        "report_p50_ms": float(np.percentile(latencies, 50)),
        "report_p99_ms": float(np.percentile(latencies, 99)),
    }


# -- scale: many trainers, several backends, large studies, long runs (issue 18) ------------


def start_service(
    db: str,
    *,
    processes: int = 1,
    port: int = 0,
    extra_env: dict[str, str] | None = None,
    code: str = "",
) -> tuple[subprocess.Popen[str], str]:
    """`forecaster serve` on db (any URL), with `processes` processes on one port; code: the
    checkout whose service runs (another commit's worktree, to compare in one run)."""
    env = {**os.environ, "FORECASTER_MODELS_DIR": os.environ.get("FORECASTER_MODELS_DIR", "")}
    if code:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{Path(code) / 'trainer_plugins'}"
    env.update(extra_env or {})
    if processes > 1 and port == 0:
        port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", str(port), "--db", db,
         "--log-level", "WARNING", "--processes", str(processes)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        cwd=code or None,  # `python -m` puts the working directory before PYTHONPATH
    )  # fmt: skip
    assert proc.stdout is not None
    match = re.search(r":(\d+) ", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit(f"the service on {db} did not start")
    address = f"127.0.0.1:{match.group(1)}"
    if processes > 1:
        wait_all_serving(address, processes)
    return proc, address


def listeners(port: int) -> int:
    """How many sockets listen on the loopback port (Linux's /proc/net/tcp and tcp6): one per
    process of a service sharing it with SO_REUSEPORT."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def wait_all_serving(
    address: str, processes: int, fresh: int = 12, timeout_s: float = 180.0
) -> None:
    """Until every process listens on the port, then until `fresh` new connections in a row
    (each handed to any of the processes by the kernel) all answer health SERVING: the
    siblings start after the first has loaded, then bind, then load. (Waiting for SERVING
    alone passed before a sibling had bound: every connection went to the first process, and
    the sibling's start-up fell inside the measurement.)"""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout_s
    port = int(address.rsplit(":", 1)[1])
    while listeners(port) < processes:
        if time.monotonic() > end:
            raise SystemExit(f"the {processes} processes on {address} did not all listen")
        time.sleep(0.2)
    while time.monotonic() < end:
        serving = 0
        for _ in range(fresh):
            own = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(address, options=own) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
                except grpc.RpcError:
                    break
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    break
                serving += 1
        if serving == fresh:
            return
        time.sleep(0.5)
    raise SystemExit(f"the processes on {address} did not all become SERVING")


def stop_service(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def trainers_load(
    address: str,
    *,
    trainers: int,
    batch: int,
    period_s: float,
    duration_s: float,
    study: str,
    channels: int = 4,
    create: bool = True,
    pid: int = 0,
    client: str = "stubs",
) -> dict[str, float]:
    """`trainers` jobs, each sending `batch` points every period_s (open loop; period_s = 0:
    closed loop, each sends again as soon as answered) for duration_s, and asking GetDecision
    once a period half-way between its reports. Counts what was acknowledged and stored.

    client: "stubs" builds each ReportMetricsRequest with the generated stub when it is sent;
    "raw" sends requests serialised before the clock starts (the same bytes: a load generator
    that leaves the service more of the cores); "stream" (closed loop only): each trainer is
    one StreamMetrics stream of pre-serialised batches, as the plugins report, that asks for
    every batch to be answered once stored (ACK_EVERY_BATCH) and sends its next batch when the
    last is answered; a batch's latency is from its write to its answer."""
    report_ms: list[float] = []
    decision_ms: list[float] = []
    failed: dict[str, int] = {}
    chans = await spread_channels(address, channels, pid)
    stubs = [pb_grpc.CurveServiceStub(c) for c in chans]
    stub = stubs[0]
    if create:
        await stub.CreateStudy(
            pb.CreateStudyRequest(
                study=pb.StudySpec(
                    name=study, metric="val_loss", direction=pb.DIRECTION_MINIMIZE,
                    max_step=1_000_000, target=2.2,
                )
            )
        )  # fmt: skip
    sem = asyncio.Semaphore(200)
    for lo in range(0, trainers, 200):
        await asyncio.gather(
            *(
                stubs[i % channels].StartRun(
                    pb.StartRunRequest(study=study, run=pb.RunSpec(name=f"t{i}"))
                )
                for i in range(lo, min(lo + 200, trainers))
            )
        )
    ahead = max(1, int(duration_s / period_s) + 1) if period_s else 0
    if client in ("raw", "stream"):
        # Enough batches for the whole run at a generous rate; more are built if it runs out.
        ahead = ahead or int(duration_s * 20_000 / batch / trainers) + 1
    prepared = [
        [report_bytes(study, f"t{i}", k * batch, batch) for k in range(ahead)]
        for i in range(trainers)
    ] if client in ("raw", "stream") else []  # fmt: skip
    raw_report = [
        c.unary_unary(
            "/forecaster.v1.CurveService/ReportMetrics",
            request_serializer=None,
            response_deserializer=pb.ReportMetricsResponse.FromString,
        )
        for c in chans
    ]
    raw_stream = [
        c.stream_stream(
            "/forecaster.v1.CurveService/StreamMetrics",
            request_serializer=None,
            response_deserializer=pb.StreamMetricsResponse.FromString,
        )
        for c in chans
    ]
    start = time.monotonic() + 0.5
    end = start + duration_s

    async def streamer(i: int) -> int:
        """One stream: batches back to back until the end, then half-close and wait for OK."""
        mine = prepared[i]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        call = raw_stream[i % channels](metadata=(ACK_EVERY_BATCH,))
        acked = 0
        try:
            while time.monotonic() < end:
                if acked == len(mine):
                    mine.append(report_bytes(study, f"t{i}", acked * batch, batch))
                t0 = time.perf_counter()
                await call.write(mine[acked])
                await call.read()  # stored: the next batch
                report_ms.append((time.perf_counter() - t0) * 1e3)
                acked += 1
            await call.done_writing()
            if await call.code() != grpc.StatusCode.OK:
                failed[(await call.code()).name] = failed.get((await call.code()).name, 0) + 1
            return acked * batch
        except grpc.aio.AioRpcError as e:
            failed[e.code().name] = failed.get(e.code().name, 0) + 1
            return 0

    async def trainer(i: int) -> int:
        my = stubs[i % channels]
        raw = raw_report[i % channels]
        run = f"t{i}"
        acked = 0
        step = 0
        k = 0
        offset = (i / trainers) * period_s
        asked = start + offset + period_s / 2
        while True:
            due = start + offset + k * period_s
            now = time.monotonic()
            if due >= end or (period_s == 0 and now >= end):
                return acked
            if due > now:
                await asyncio.sleep(due - now)
            t0 = time.perf_counter()
            try:
                if client == "raw":
                    mine, n = prepared[i], step // batch
                    while n >= len(mine):
                        mine.append(report_bytes(study, run, len(mine) * batch, batch))
                    resp = await raw(mine[n], timeout=max(period_s, 5.0))
                else:
                    pts = [
                        pb.Point(
                            step=step + j + 1, value=2.0 + 3.0 * ((step + j + 1) / 10.0) ** -0.5
                        )
                        for j in range(batch)
                    ]
                    resp = await my.ReportMetrics(
                        pb.ReportMetricsRequest(study=study, run=run, points=pts),
                        timeout=max(period_s, 5.0),
                    )
                report_ms.append((time.perf_counter() - t0) * 1e3)
                acked += resp.n_stored
                step += batch
            except grpc.aio.AioRpcError as e:
                failed[e.code().name] = failed.get(e.code().name, 0) + 1
            k += 1
            if period_s and time.monotonic() >= asked and asked < end:
                asked += period_s
                async with sem:
                    t0 = time.perf_counter()
                    try:
                        await my.GetDecision(
                            pb.GetDecisionRequest(study=study, run=run), timeout=5.0
                        )
                        decision_ms.append((time.perf_counter() - t0) * 1e3)
                    except grpc.aio.AioRpcError as e:
                        failed[e.code().name] = failed.get(e.code().name, 0) + 1

    cpu0 = cpu_s_of_tree(pid) if pid else math.nan
    t0 = time.perf_counter()
    each = streamer if client == "stream" else trainer
    acked = await asyncio.gather(*(each(i) for i in range(trainers)))
    seconds = time.perf_counter() - t0
    cpu_s = (cpu_s_of_tree(pid) if pid else math.nan) - cpu0
    stored, token = 0, ""
    while True:  # every page of the listing
        page = await stub.ListRuns(
            pb.ListRunsRequest(study=study, page_size=1_000, page_token=token), timeout=60
        )
        stored += sum(r.n_points for r in page.runs if r.spec.name.startswith("t"))
        token = page.next_page_token
        if not token:
            break
    for c in chans:
        await c.close()
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else math.nan  # noqa: E731
    return {
        "acked": float(sum(acked)),
        "stored": float(stored),
        "points_per_s": stored / seconds,
        "report_p50_ms": pct(report_ms, 50),
        "report_p99_ms": pct(report_ms, 99),
        "decision_p50_ms": pct(decision_ms, 50),
        "decision_p99_ms": pct(decision_ms, 99),
        "failed": float(sum(failed.values())),
        # The service's CPU (user + system, every process) per ReportMetrics answered: what a
        # report costs, much less moved by the machine's other load than its latency is.
        "cpu_ms_per_report": cpu_s * 1e3 / max(len(report_ms), 1),
        "failed_codes": ", ".join(f"{k} {v}" for k, v in sorted(failed.items())) or "-",
    }


async def spread_channels(address: str, n: int, pid: int = 0) -> list[grpc.aio.Channel]:
    """n channels (each its own connection), as many to each process of the service (pid's
    tree) as the others have: connections are kept or closed by which process the kernel
    handed them to (SO_REUSEPORT hashes each connection to one), as a thousand trainers,
    each with its own connection, spread themselves. With four connections hashed at random,
    one process of two got three or four of them in 5 of 8 tries."""
    import psutil

    def connection() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])

    procs = []
    if pid:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    if len(procs) <= 1:
        return [connection() for _ in range(n)]
    port = int(address.rsplit(":", 1)[1])

    def peers() -> dict[int, set[int]]:  # process -> client ports of its connections
        return {
            p.pid: {
                c.raddr.port
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr
            }
            for p in procs
        }

    share = -(-n // len(procs))
    kept: dict[int, list[grpc.aio.Channel]] = {p.pid: [] for p in procs}
    for _ in range(50 * n):
        if sum(len(v) for v in kept.values()) >= n:
            break
        before = peers()
        channel = connection()
        await asyncio.wait_for(channel.channel_ready(), 30)
        after = peers()
        owner = next((p for p in after if after[p] - before.get(p, set())), None)
        if owner is not None and len(kept[owner]) < share:
            kept[owner].append(channel)
        else:
            await channel.close()
    groups = list(kept.values())  # interleaved: channel i % n goes to each process in turn
    chans = [g[k] for k in range(share) for g in groups if k < len(g)]
    if len(chans) < n:
        raise SystemExit(f"could not spread {n} connections over the processes on {address}")
    return chans[:n]


CLIENTS = {
    "raw": "serialised before the clock starts",
    "stubs": "built by the generated stub at each call",
}


def acks_every_batch(code: str) -> bool:
    """Whether the service of that checkout ("": this one) answers every batch of a stream
    when asked (older ones answer decision changes only)."""
    root = Path(code) if code else Path(__file__).resolve().parents[1]
    return ACK_EVERY_BATCH[0] in (root / "forecaster/server/servicer.py").read_text()


def report_bytes(study: str, run: str, after_step: int, batch: int) -> bytes:
    """A serialised ReportMetricsRequest of `batch` points after after_step (the curve every
    trainer of trainers_load sends)."""
    steps = range(after_step + 1, after_step + batch + 1)
    pts = [pb.Point(step=s, value=2.0 + 3.0 * (s / 10.0) ** -0.5) for s in steps]
    return pb.ReportMetricsRequest(study=study, run=run, points=pts).SerializeToString()


class ThrottledProxy:
    """A loopback TCP proxy that passes the server's bytes to the client at rate_bps per
    connection, through small socket buffers: each client behind it is a slow reader."""

    def __init__(self, target: str, rate_bps: float) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.rate_bps = rate_bps
        self.server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # no autotuning
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.target)
        s_reader, s_writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            try:
                while data := await src.read(4096 if slow else 65536):
                    dst.write(data)
                    await dst.drain()
                    if slow:
                        await asyncio.sleep(len(data) / self.rate_bps)
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the proxy stopped under it
            await asyncio.gather(pump(c_reader, s_writer, False), pump(s_reader, c_writer, True))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def slow_readers(
    address: str, *, readers: int, rate_bps: float, duration_s: float, study: str
) -> dict[str, float]:
    """`readers` clients, each on its own connection behind a ThrottledProxy, asking again and
    again for the biggest answers there are (a 10,000-point ListPoints page, a 1,000-run
    ListRuns page) and reading them at rate_bps. Counts the answers they finished."""
    proxy = ThrottledProxy(address, rate_bps)
    await proxy.start()
    done = 0
    end = time.monotonic() + duration_s

    async def reader(i: int) -> None:
        nonlocal done
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
        async with grpc.aio.insecure_channel(proxy.address, options=options) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            while time.monotonic() < end:
                try:
                    if i % 2:
                        await stub.ListPoints(
                            pb.ListPointsRequest(study=study, run="long", page_size=10_000),
                            timeout=max(1.0, end - time.monotonic()),
                        )
                    else:
                        await stub.ListRuns(
                            pb.ListRunsRequest(study=study, page_size=1_000),
                            timeout=max(1.0, end - time.monotonic()),
                        )
                    done += 1
                except grpc.aio.AioRpcError:
                    pass

    await asyncio.gather(*(reader(i) for i in range(readers)))
    await proxy.stop()
    return {"answers": float(done)}


def cpu_s_of_tree(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    try:
        root = psutil.Process(pid)
        times = [p.cpu_times() for p in [root, *root.children(recursive=True)]]
        return sum(t.user + t.system for t in times)
    except psutil.NoSuchProcess:
        return math.nan


def rss_mb_of_tree(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.NoSuchProcess:
        return math.nan


async def with_slow_readers(
    address: str, pid: int, args: argparse.Namespace, readers: int
) -> tuple[dict[str, float], float, float, float]:
    """The paced load with `readers` slow readers at the same time; returns the load's
    figures, the service's RSS before (MB), its peak during, and the readers' answers."""
    async with grpc.aio.insecure_channel(address) as channel:  # the long run readers page
        stub = pb_grpc.CurveServiceStub(channel)
        await stub.CreateStudy(pb.CreateStudyRequest(study=pb.StudySpec(
            name="load", metric="val_loss", direction=pb.DIRECTION_MINIMIZE,
            max_step=1_000_000, target=2.2)))  # fmt: skip
        await stub.StartRun(pb.StartRunRequest(study="load", run=pb.RunSpec(name="long")))
        for lo in range(1, 10_001, 5_000):
            pts = [
                pb.Point(step=s, value=2.0 + 3.0 * (s / 10.0) ** -0.5)
                for s in range(lo, lo + 5_000)
            ]
            request = pb.ReportMetricsRequest(study="load", run="long", points=pts)
            await stub.ReportMetrics(request)
    before = rss_mb_of_tree(pid)
    peak = before
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb_of_tree(pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.ensure_future(sample())
    load, reads = await asyncio.gather(
        trainers_load(
            address, trainers=args.scale_trainers, batch=args.batch, period_s=args.period,
            duration_s=args.duration, study="load", create=False,
        ),
        slow_readers(
            address, readers=readers, rate_bps=args.reader_bps, duration_s=args.duration,
            study="load",
        ),
    )  # fmt: skip
    stop.set()
    await sampler
    return load, before, peak, reads["answers"]


def populate_study(url: str, study: str, n_runs: int, rounds: int = 1) -> None:
    """A study of n_runs runs written straight into the store (half finished, 20 points each,
    a decision each), as a service would have left it; plus 20 running probe runs a round."""
    from forecaster.curves import Direction, Points
    from forecaster.store import RunSpec, RunState, StoredDecision, StudySpec, open_store

    store = open_store(url)
    store.create_study(StudySpec(study, "val_loss", Direction.MIN, max_step=1000))
    steps = np.arange(1, 21)

    def one(i: int) -> None:
        name = f"old-{i}"
        store.start_run(study, RunSpec(name, {"lr": 1e-3 * (1 + i % 7), "layers": i % 5}))
        store.append_points(study, name, Points.of(steps, curve(i, steps)))
        store.save_decision(
            study, name,
            StoredDecision(20, 20, 0, 0, "continue", "promising", "", {}, 0, "forecast",
                           float(2.0 + (i % 97) / 100)),
        )  # fmt: skip
        if i % 2:
            store.finish_run(study, name, RunState.FINISHED)

    # Many writers at once: their commits group (SQLite) or overlap (PostgreSQL).
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n_runs)))
    for r in range(rounds):
        for j in range(20):
            store.start_run(study, RunSpec(f"probe-{r}-{j}"))
    store.close()


async def probe_reports(address: str, study: str, reports: int, round_: int = 0) -> float:
    """ReportMetrics p50 (ms) over `reports` sequential batches of 10 to the 20 probe runs of
    a round."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        for k in range(reports):
            run, lo = f"probe-{round_}-{k % 20}", 10 * (k // 20) + 1
            pts = [
                pb.Point(step=s, value=2.0 + 3.0 * (s / 10.0) ** -0.5) for s in range(lo, lo + 10)
            ]
            t0 = time.perf_counter()
            await stub.ReportMetrics(pb.ReportMetricsRequest(study=study, run=run, points=pts))
            latencies.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(latencies[20:], 50))  # after each probe's first (cold) report


def first_decision_after_restart(url: str, n_points: int) -> tuple[float, float]:
    """(seconds to write, seconds to the first GetDecision after a restart) of a n_points run."""
    from forecaster.curves import Direction, Points
    from forecaster.store import RunSpec, StudySpec, open_store

    store = open_store(url)
    store.create_study(StudySpec("long", "val_loss", Direction.MIN, max_step=2 * n_points))
    store.start_run("long", RunSpec("r"))
    steps = np.arange(1, n_points + 1)
    values = curve(1, steps)
    t0 = time.perf_counter()
    for lo in range(0, n_points, 10_000):
        store.append_points(
            "long", "r", Points.of(steps[lo : lo + 10_000], values[lo : lo + 10_000])
        )
    wrote = time.perf_counter() - t0
    store.close()
    proc, address = start_service(url)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            stub.GetStudy(pb.GetStudyRequest(name="long"), timeout=60)  # connected, serving
            t0 = time.perf_counter()
            stub.GetDecision(pb.GetDecisionRequest(study="long", run="r"), timeout=120)
            first = time.perf_counter() - t0
    finally:
        stop_service(proc)
    return wrote, first


def run_scale(args: argparse.Namespace, tmp: Path) -> str:
    """The scale phases; returns the markdown section."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.postgres import PostgresServer

    load_before = os.getloadavg()[0]
    pg = PostgresServer.start() if not args.no_postgres else None
    backends: list[tuple[str, Callable[[], str], int]] = [
        ("SQLite, 1 process", lambda: str(tmp / f"scale-{time.monotonic_ns()}.db"), 1),
    ]
    if pg is not None:
        backends += [
            ("PostgreSQL, 1 process", pg.fresh_url, 1),
            ("PostgreSQL, 2 processes on one port", pg.fresh_url, 2),
        ]
    load_rows: list[list[object]] = []
    runs: list[tuple[str, str, str, dict[str, float]]] = []
    try:
        modes = [
            ("paced", args.period, args.client),
            ("closed loop, unary", 0.0, args.client),
            ("closed loop, streams", 0.0, "stream"),
        ]
        codes = [("this checkout", "")] + [(f"{Path(a).name} (--against)", a) for a in args.against]
        for label, url_of, processes in tqdm(backends, desc="load", unit="backend"):
            for round_ in range(args.rounds):
                for mode, period, client in modes:
                    # alternate which code goes first, so neither always meets the same moment
                    order = codes if round_ % 2 == 0 else codes[::-1]
                    for code_label, code in order:
                        if client == "stream" and not acks_every_batch(code):
                            continue  # a service that answers only changes: no closed loop
                        proc, address = start_service(url_of(), processes=processes, code=code)
                        try:
                            trainers = args.scale_trainers if period else args.closed_trainers
                            r = asyncio.run(
                                trainers_load(
                                    address, trainers=trainers, batch=args.batch,
                                    period_s=period, duration_s=args.duration, study="load",
                                    pid=proc.pid, client=client,
                                )
                            )  # fmt: skip
                        finally:
                            stop_service(proc)
                        offered = (
                            f"{trainers * args.batch / period:,.0f}/s" if period else "as answered"
                        )
                        runs.append((label, mode, code_label, r))
                        load_rows.append([
                            label, *([code_label] if args.against else []),
                            f"{mode}, {trainers} trainers", offered, f"{r['acked']:.0f}",
                            f"{r['stored']:.0f}", f"{r['points_per_s']:,.0f}",
                            f"{r['report_p50_ms']:.1f}", f"{r['report_p99_ms']:.1f}",
                            f"{r['decision_p50_ms']:.1f}", f"{r['decision_p99_ms']:.1f}",
                            f"{r['cpu_ms_per_report']:.2f}", r["failed_codes"],
                            f"{os.getloadavg()[0]:.1f}",
                        ])  # fmt: skip
        reader_rows: list[list[object]] = []
        for label, url_of, processes in backends[:1] if args.readers else []:
            for readers in (0, args.readers):
                proc, address = start_service(url_of(), processes=processes)
                try:
                    r, before, peak, answers = asyncio.run(
                        with_slow_readers(address, proc.pid, args, readers)
                    )
                finally:
                    stop_service(proc)
                reader_rows.append([
                    label, readers, f"{args.reader_bps / 1024:.0f} KiB/s" if readers else "-",
                    f"{answers:.0f}", f"{before:.0f}", f"{peak:.0f}", f"{peak - before:.0f}",
                    f"{r['report_p50_ms']:.1f}", f"{r['report_p99_ms']:.1f}",
                    f"{r['decision_p99_ms']:.1f}", f"{r['acked']:.0f}", f"{r['stored']:.0f}",
                ])  # fmt: skip
        # Every study size populated first, then probed in rounds that go through the sizes in
        # turn (each round its own fresh probe runs): the machine's drift falls on every size
        # alike, and each size's figure is the median of its rounds.
        sizes = args.study_sizes if not args.load_only else []
        urls = {}
        for n_runs in tqdm(sizes, desc="study size: populate"):
            for b, (_, url_of, _) in enumerate(backends[:2]):
                urls[n_runs, b] = url_of()
                populate_study(urls[n_runs, b], "big", n_runs, args.size_rounds)
        p50s: dict[tuple[int, int], list[float]] = defaultdict(list)
        for r in tqdm(range(args.size_rounds) if sizes else [], desc="study size: rounds"):
            for n_runs in sizes:
                for b in range(len(backends[:2])):
                    proc, address = start_service(urls[n_runs, b])
                    try:
                        p50s[n_runs, b].append(
                            asyncio.run(probe_reports(address, "big", args.probes, r))
                        )
                    finally:
                        stop_service(proc)
        n_backends = len(backends[:2])
        size_rows: list[list[object]] = [
            [f"{n:,}", *(f"{np.median(p50s[n, b]):.2f}" for b in range(n_backends))] for n in sizes
        ]
        long_rows: list[list[object]] = []
        for label, url_of, _ in backends[:2] if not args.load_only else []:
            wrote, first = first_decision_after_restart(url_of(), args.long_points)
            long_rows.append([label, f"{args.long_points:,}", f"{wrote:.1f}", f"{first:.2f}"])
    finally:
        if pg is not None:
            pg.stop()
    load_after = os.getloadavg()[0]
    ratios = "not measured (--load-only)"
    if size_rows:
        base = [float(v) for v in size_rows[0][1:]]
        last = [float(v) for v in size_rows[-1][1:]]
        ratios = ", ".join(
            f"{label.split(',')[0]} {b / a:.2f}x"
            for (label, _, _), a, b in zip(backends[:2], base, last, strict=True)
        )
    reader_table = markdown_table(
        ["store", "slow readers", "each reads at", "answers read", "service RSS before MB",
         "peak RSS MB", "pinned MB", "report p50 ms", "report p99 ms", "GetDecision p99 ms",
         "acknowledged", "stored"],
        reader_rows,
    )  # fmt: skip
    load_table = markdown_table(
        ["store", *(["service"] if args.against else []), "load", "offered points",
         "acknowledged", "stored", "durable points/s",
         "report p50 ms", "report p99 ms", "GetDecision p50 ms", "GetDecision p99 ms",
         "service CPU ms per report", "failed calls", "load average after"],
        load_rows,
    )  # fmt: skip
    size_table = markdown_table(
        ["runs in the study"] + [f"{b[0].split(',')[0]} report p50 ms" for b in backends[:2]],
        size_rows,
    )
    long_table = markdown_table(
        ["store", "points in the run", "seconds to write", "first GetDecision after restart (s)"],
        long_rows,
    )
    if args.against:
        return compared_section(args, runs, load_table, load_before, load_after)
    return (
        "## Service at scale (`python benchmarks/service_load.py --scale`)\n\n"
        f"Each row a fresh `forecaster serve` (SQLite: one file, group commit; PostgreSQL: a "
        f"private cluster started by the script, fsync on; two processes: `--processes 2` on "
        f"one port, SO_REUSEPORT). Paced: {args.scale_trainers} simulated trainers, each a "
        f"batch of {args.batch} points every {args.period:g} s and a GetDecision half-way "
        f"between, for {args.duration:g} s; closed loop: {args.closed_trainers} trainers each "
        f"sending its next batch as soon as the last is answered, unary (one ReportMetrics per "
        f"batch) or over streams (each trainer one StreamMetrics stream that asks for every "
        f"batch to be answered once stored, the plugins' way of reporting). Unary requests "
        f"are {CLIENTS[args.client]} "
        f"(`--client {args.client}`). One asyncio load generator "
        f"on the same {os.cpu_count()} cores as the service. 'stored' is what the service "
        f"holds afterwards (ListRuns), 'acknowledged' what the trainers were told. Load "
        f"average of the machine (shared with other work): {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end; with more runnable processes than cores, latencies "
        f"measure the machine as much as the service, and 'service CPU ms per report' (its "
        f"user + system time over the ReportMetrics answered, GetDecision included in the "
        f"paced rows) is the steadier figure.\n\n"
        f"{load_table}\n\n"
        f"Slow readers: the same paced load, with and without {args.readers} readers beside "
        f"it, each on its own connection behind a loopback proxy that passes it the service's "
        f"bytes at {args.reader_bps / 1024:.0f} KiB/s through 16 KiB socket buffers, asking "
        f"again and again for the biggest pages there are (a 10,000-point ListPoints page, a "
        f"1,000-run ListRuns page). 'pinned' is the service's peak resident memory (sampled "
        f"every 0.25 s) less its memory before the load.\n\n{reader_table}\n\n"
        f"ReportMetrics p50 against the size of the study (runs written into the store "
        f"beforehand, half finished, each with a decision; {args.probes} reports of 10 points "
        f"to 20 running runs, their first reports left out; {args.size_rounds} rounds through "
        f"the sizes in turn, each with fresh probe runs, the median of the rounds' p50s). "
        f"p50 at {args.study_sizes[-1]:,} "
        f"runs / at {args.study_sizes[0]:,}: {ratios}.\n\n{size_table}\n\n"
        f"The first decision on a long run after a restart of the service:\n\n{long_table}\n"
    )


def commit_of(checkout: str) -> str:
    """The short commit a checkout is at ("?" when git cannot tell)."""
    done = subprocess.run(
        ["git", "-C", checkout, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def compared_section(
    args: argparse.Namespace,
    runs: list[tuple[str, str, str, dict[str, float]]],
    load_table: str,
    load_before: float,
    load_after: float,
) -> str:
    """The section of a run with --against: every row, then each mode's means side by side."""
    codes = list(dict.fromkeys(code for _, _, code, _ in runs))
    rows: list[list[object]] = []
    for label, mode in dict.fromkeys((label, mode) for label, mode, _, _ in runs):
        row: list[object] = [label, mode]
        for code in codes:
            mine = [r for lb, m, c, r in runs if (lb, m, c) == (label, mode, code)]
            if not mine:
                row += ["-", "-", "-", "-"]
                continue
            keys = ("points_per_s", "cpu_ms_per_report", "report_p99_ms", "decision_p99_ms")
            means = {k: float(np.mean([r[k] for r in mine])) for k in keys}
            row += [
                f"{means['points_per_s']:,.0f}",
                f"{means['cpu_ms_per_report']:.2f}",
                f"{means['report_p99_ms']:.1f}",
                f"{means['decision_p99_ms']:.1f}",
            ]
        rows.append(row)
    summary = markdown_table(
        ["store", "load"]
        + [
            f"{c}: {what}"
            for c in codes
            for what in ("points/s", "CPU ms/report", "p99 ms", "GetDecision p99 ms")
        ],
        rows,
    )
    return (
        "## Service throughput, checkouts compared (`python benchmarks/service_load.py --scale "
        "--load-only --against CHECKOUT`)\n\n"
        f"Each row a fresh `forecaster serve` on a fresh store (a SQLite file; a schema of "
        f"the private PostgreSQL cluster the script starts, fsync on; two processes: "
        f"`--processes 2` on one port, the load's connections spread evenly over them); the "
        f"rows of each load "
        f"alternate between this checkout's service and the other's "
        f"({', '.join(f'{a}, a worktree of {commit_of(a)}' for a in args.against)}), "
        f"{args.rounds} round(s), the order flipped each round; the load generator is this "
        f"checkout's in both. Paced: {args.scale_trainers} trainers, a batch of {args.batch} "
        f"points every {args.period:g} s and a GetDecision half-way between, {args.duration:g} "
        f"s; closed loop: {args.closed_trainers} trainers each sending its next batch when the "
        f"last is answered, unary (ReportMetrics, requests {CLIENTS[args.client]}) or streams "
        f"(one StreamMetrics stream per trainer asking for every batch to be answered once "
        f"stored; a service that answers only decision changes has no stream row). 'service "
        f"CPU ms per report': the service's user + system time over the batches answered. "
        f"{os.cpu_count()} cores shared with the load generator and with other work: load "
        f"average {load_before:.1f} at the start, {load_after:.1f} at the end.\n\n"
        f"{load_table}\n\nMeans per load:\n\n{summary}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainers", type=int, default=50)
    parser.add_argument("--points", type=int, default=1000, help="points per trainer")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=20, help="GetDecision calls per trainer")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--optuna-points", type=int, default=3000)
    parser.add_argument(
        "--offered",
        type=float,
        default=2000.0,
        help="points/s offered by all trainers together in the paced phase",
    )
    parser.add_argument(
        "--paced-points", type=int, default=400, help="points per trainer in the paced phase"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    scale = parser.add_argument_group("scale (--scale: its own section of docs/benchmarks.md)")
    scale.add_argument("--scale", action="store_true", help="run the scale phases only")
    scale.add_argument("--no-postgres", action="store_true", help="SQLite only")
    scale.add_argument("--scale-trainers", type=int, default=1000)
    scale.add_argument("--closed-trainers", type=int, default=200)
    scale.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw",
        help="unary rows: requests built by the stub per call, or serialised beforehand",
    )  # fmt: skip
    scale.add_argument(
        "--against", nargs="*", default=[], metavar="CHECKOUT",
        help="also run every load row with the service of these checkouts (e.g. a worktree "
        "of the base commit), alternating with this one",
    )  # fmt: skip
    scale.add_argument("--rounds", type=int, default=1, help="load rows repeated this often")
    scale.add_argument("--period", type=float, default=2.0, help="seconds between batches")
    scale.add_argument("--duration", type=float, default=30.0, help="seconds per load phase")
    scale.add_argument("--study-sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    scale.add_argument("--probes", type=int, default=200, help="reports per study size")
    scale.add_argument(
        "--size-rounds", type=int, default=3, help="rounds through the study sizes (median)"
    )
    scale.add_argument("--long-points", type=int, default=1_000_000)
    scale.add_argument("--readers", type=int, default=50, help="slow readers beside the load")
    scale.add_argument("--reader-bps", type=float, default=64 * 1024, help="their read rate")
    scale.add_argument(
        "--load-only", action="store_true", help="the load tables only (no study sizes, long run)"
    )
    args = parser.parse_args()

    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            body = run_scale(args, Path(tmp))
        print(body)
        if not args.no_write:
            name = "service_compared" if args.against else "service_scale"
            print(f"wrote {write_section(name, body)}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(Path(tmp) / "load.db")
        try:
            ours = asyncio.run(
                run_load(
                    address,
                    args.trainers,
                    args.points,
                    args.batch,
                    args.decisions,
                    args.time_limit,
                    "closed-loop",
                )
            )
            paced = asyncio.run(
                run_load(
                    address,
                    args.trainers,
                    args.paced_points,
                    args.batch,
                    args.decisions,
                    args.time_limit,
                    "paced",
                    offered_points_per_s=args.offered,
                )
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        theirs = run_optuna(
            Path(tmp) / "optuna.db", args.trainers, args.points, args.optuna_points, args.time_limit
        )

    ratio = ours["points_per_s"] / theirs["points_per_s"]

    def ours_row(label: str, r: dict[str, float]) -> list[object]:
        return [
            label,
            f"{r['points']:.0f}",
            f"{r['points_per_s']:,.0f}",
            f"{r['report_p50_ms']:.2f}",
            f"{r['report_p99_ms']:.2f}",
            f"{r['decision_p50_ms']:.2f}",
            f"{r['decision_p99_ms']:.2f}",
        ]

    rows = [
        ours_row("forecaster, closed loop (each trainer sends as fast as answered)", ours),
        ours_row(f"forecaster, paced ({args.offered:,.0f} points/s offered)", paced),
        [
            "Optuna 'report + should_prune' (RDB on SQLite, in-process)",
            f"{theirs['points']:.0f}",
            f"{theirs['points_per_s']:,.0f}",
            f"{theirs['report_p50_ms']:.2f}",
            f"{theirs['report_p99_ms']:.2f}",
            "-",
            "-",
        ],
    ]
    table = markdown_table(
        [
            "system",
            "points",
            "durable points/s",
            "report p50 ms",
            "report p99 ms",
            "GetDecision p50 ms",
            "GetDecision p99 ms",
        ],
        rows,
    )
    body = (
        f"## Service load (`python benchmarks/service_load.py`)\n\n"
        f"{args.trainers} concurrent trainers, {args.points} points each in batches of "
        f"{args.batch}, over loopback to `forecaster serve` (SQLite, WAL, synchronous=FULL) "
        f"in its own process: closed loop, then paced at {args.offered:,.0f} points/s "
        f"offered ({args.paced_points} points per trainer); after each, "
        f"{args.decisions} GetDecision calls per trainer on cached forecasts (all at once in "
        f"the closed loop, on the same schedule in the paced phase). The load "
        f"generator shares the 2 cores with the service. Optuna reports "
        f"one point per call (that is its API), up to {args.optuna_points} points. "
        f"Machine: {platform.machine()}, {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores.\n\n{table}\n\n"
        f"Throughput ratio forecaster / Optuna: **{ratio:.1f}x**.\n"
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('service_load', body)}")


if __name__ == "__main__":
    main()
