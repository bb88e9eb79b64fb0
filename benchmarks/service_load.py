"""Service throughput and latency under N concurrent simulated trainers, beside Optuna.

Starts `forecaster serve` in its own process on a loopback port with a fresh SQLite file,
runs N trainers (asyncio, one client process) that each report P points in batches of B with
ReportMetrics, then ask GetDecision G times each (the forecast is cached by then). Then,
in the same run, Optuna with RDB storage on SQLite does trial.report + trial.should_prune for
points of the same curves, bounded in count and time. Prints a table and writes it to
docs/benchmarks.md.

    python benchmarks/service_load.py [--trainers 50] [--points 1000] [--batch 10]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from forecaster.server._proto import forecaster_pb2 as pb  # noqa: E402
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc  # noqa: E402


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
    args = parser.parse_args()

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
