"""What each store call of a report costs PostgreSQL and the service, call by call.

Starts a private PostgreSQL cluster (tests/postgres.py, fsync on), opens a PostgresStore on a
fresh schema and, from one thread, makes the calls a report and a GetDecision make, each many
times over 50 runs: per call, the CPU of every PostgreSQL process of the cluster (user +
system), the CPU of the calling process, and the wall time (a write's is mostly its COMMIT
waiting on the disk). CPU is what the machine's other load moves least. With --against
CHECKOUT the same calls run with that checkout's store too (its code, this script), in one
table. Prints the table and writes it to docs/benchmarks.md.

    python benchmarks/store_calls.py [--calls 2000] [--rounds 5] [--against CHECKOUT ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 50

CALLS = {
    "append": "ReportMetrics: append 10 points, then the incumbent (best_standings)",
    "save_decision": "a report's decision saved (when it changed)",
    "get_run": "GetDecision: the run read (is the cached decision current?)",
    "first_reads": "a run's first report: its points and its latest decision read",
}


def measure(url: str, calls: int) -> dict[str, tuple[float, float, float]]:
    """{call: (PostgreSQL CPU ms, caller CPU ms, wall ms) per call}, with the store of the
    forecaster package on sys.path."""
    import numpy as np
    import psutil

    from forecaster.curves import Direction, Points
    from forecaster.store import RunSpec, StoredDecision, StudySpec, open_store

    store = open_store(url, pool_size=2)
    store.create_study(StudySpec("s", "val_loss", Direction.MIN, max_step=1_000_000))
    for i in range(RUNS):
        store.start_run("s", RunSpec(f"r{i}"))
    postmaster = psutil.Process(int(os.environ["STORE_CALLS_POSTMASTER"]))
    me = psutil.Process()

    def cpu(p: psutil.Process, tree: bool) -> float:
        procs = [p, *p.children(recursive=True)] if tree else [p]
        return sum(t.user + t.system for t in (q.cpu_times() for q in procs))

    def each(n: int, call: Callable[[int], object]) -> tuple[float, float, float]:
        pg0, me0, t0 = cpu(postmaster, True), cpu(me, False), time.perf_counter()
        for k in range(n):
            call(k)
        return (
            1e3 * (cpu(postmaster, True) - pg0) / n,
            1e3 * (cpu(me, False) - me0) / n,
            1e3 * (time.perf_counter() - t0) / n,
        )

    def append(k: int) -> None:
        lo = (k // RUNS) * 10
        steps = np.arange(lo + 1, lo + 11)
        store.append_points("s", f"r{k % RUNS}", Points.of(steps, 2.0 + 3.0 / np.sqrt(steps)))
        store.best_standings("s", 2)

    decision = StoredDecision(10, 10, 0, 0, "continue", "promising", "", {"stop": 0.1}, 0, "")

    def save(k: int) -> None:
        # another vote count and forecast each time: a decision worth saving
        changed = replace(decision, votes=k // RUNS % 2, forecast_final=2.0 + k * 1e-6)
        store.save_decision("s", f"r{k % RUNS}", changed)

    def first_reads(k: int) -> None:
        store.get_points("s", f"r{k % RUNS}")
        store.get_decision("s", f"r{k % RUNS}")

    out = {"append": each(calls, append)}
    out["save_decision"] = each(calls // 2, save)
    out["get_run"] = each(calls, lambda k: store.get_run("s", f"r{k % RUNS}"))
    out["first_reads"] = each(calls // 2, first_reads)
    store.close()
    return out


def in_checkout(code: str, url: str, calls: int, postmaster: int) -> dict[str, list[float]]:
    """measure() with the store of another checkout, in a process of its own."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{code}{os.pathsep}{Path(code) / 'trainer_plugins'}",
        "STORE_CALLS_POSTMASTER": str(postmaster),
    }
    done = subprocess.run(
        [sys.executable, __file__, "--worker", url, "--calls", str(calls)],
        cwd=code, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="appends and run reads")
    parser.add_argument("--rounds", type=int, default=5, help="each checkout this often")
    parser.add_argument("--against", nargs="*", default=[], metavar="CHECKOUT")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.calls)))
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import psycopg
    from _report import markdown_table, write_section
    from tqdm import tqdm

    from tests.postgres import PostgresServer

    server = PostgresServer.start()
    try:
        postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
        codes = [("this checkout", str(ROOT))] + [
            (f"{Path(a).name} (--against)", str(Path(a).resolve())) for a in args.against
        ]
        rounds: dict[str, list[dict[str, list[float]]]] = {label: [] for label, _ in codes}
        for r in tqdm(range(args.rounds), desc="rounds"):
            for label, code in codes if r % 2 == 0 else codes[::-1]:  # neither always first
                schema = f"calls_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(server.url, autocommit=True) as conn:
                    conn.execute(f"CREATE SCHEMA {schema}")
                url = f"{server.url}?options=-csearch_path%3D{schema}"
                rounds[label].append(in_checkout(code, url, args.calls, postmaster))
    finally:
        server.stop()
    rows = [
        [CALLS[call], label, *(f"{np.median([g[call][i] for g in got]):.3f}" for i in range(3))]
        for call in CALLS
        for label, got in rounds.items()
    ]
    table = markdown_table(
        ["call", "store", "PostgreSQL CPU ms", "service CPU ms", "wall ms"], rows
    )
    against = "".join(f" `{Path(a).name}`: a worktree of {_commit(a)}." for a in args.against)
    body = (
        "## Store calls on PostgreSQL (`python benchmarks/store_calls.py`)\n\n"
        f"Per call, from one thread, over {RUNS} runs of one study ({args.calls} appends and "
        f"run reads, half as many decisions and first reads; the median of {args.rounds} "
        f"rounds, the checkouts' order flipped each round): the CPU of every process of "
        f"the private PostgreSQL cluster (fsync on), the CPU of the calling process, and the "
        f"wall time, which for a write is mostly its COMMIT waiting on the disk (one writer: "
        f"no group commit to share it).{against} Load average of the machine: "
        f"{os.getloadavg()[0]:.1f}.\n\n{table}\n"
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('store_calls', body)}")


def _commit(checkout: str) -> str:
    done = subprocess.run(
        ["git", "-C", checkout, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
