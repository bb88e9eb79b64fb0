"""What the trainer plugin costs the training job: report() latency, and wall time.

1. report() on the training thread, between steps of a small torch model (about 0.2 ms of
   compute each), with the service up, slow (100 ms added to the handling of every request,
   each message of a stream included) and down (a closed port): median, p99 and max.
2. A whole training run (an MLP, about 2 ms a step) with no plugin, and with a Reporter while
   the service is down for the whole run and while it is up. Each repeat runs the three
   back to back in a rotating order; the change is the median over repeats of each one's
   wall time against the no-plugin run of the same repeat.

The service is the real one, in its own process, on a loopback port. Prints a table and
writes it to docs/benchmarks.md.

    python benchmarks/plugin_overhead.py [--reports 20000] [--steps 3000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from forecaster_client import Reporter  # noqa: E402


def serve(db: str, delay_s: float) -> None:
    """The real service, with delay_s added before each request is handled."""
    from forecaster.config import Settings
    from forecaster.server import app
    from forecaster.server.servicer import CurveServicer

    class SlowServicer(CurveServicer):
        async def _run(self, context, fn, *args):  # every unary call and stream message
            await asyncio.sleep(delay_s)
            return await super()._run(context, fn, *args)

    app.CurveServicer = SlowServicer  # type: ignore[misc]
    settings = Settings(host="127.0.0.1", port=0, db=f"sqlite:///{db}")

    async def main() -> None:
        running = await app.start_server(app.build_engine(settings), settings)
        print(f"listening {running.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_service(db: Path, delay_s: float) -> tuple[subprocess.Popen[str], str]:
    script = Path(__file__).resolve()
    proc = subprocess.Popen(
        [sys.executable, str(script), "--serve", str(db), str(delay_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    match = re.search(r"listening (\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("the service did not start")
    return proc, f"127.0.0.1:{match.group(1)}"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class Model:
    """An MLP trained on CPU: the stand-in for a training step (SMALL: about 0.35 ms a step,
    reports at a harsher pace than real jobs; STEP: about 2 ms a step, still a short one)."""

    SMALL = (32, 64, 64)
    STEP = (128, 512, 256)

    def __init__(self, shape: tuple[int, int, int]) -> None:
        inputs, width, batch = shape
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(inputs, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)
        )
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.x, self.y = torch.randn(batch, inputs), torch.randn(batch, 1)

    def step(self) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self.net(self.x), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()


def report_latency(address: str, n: int, run: str) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds of each report() and should_stop() call, made between training steps."""
    model = Model(Model.SMALL)
    reporter = Reporter(address, "plugin-overhead", run, max_step=n)
    times = np.empty(n, dtype=np.int64)
    asks = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for step in range(n):
        loss = float(model.step())
        t0 = clock()
        reporter.report(step, loss, lr=0.01)
        t1 = clock()
        reporter.should_stop()
        asks[step] = clock() - t1
        times[step] = t1 - t0
    reporter.close(timeout_s=2.0)
    return times, asks


def train(steps: int, address: str | None, run: str) -> float:
    """Wall seconds of a training run, with a Reporter when address is given."""
    model = Model(Model.STEP)
    reporter = Reporter(address, "plugin-overhead", run, max_step=steps) if address else None
    t0 = time.perf_counter()
    for step in range(steps):
        loss = model.step()
        if reporter is not None:
            reporter.report(step, loss, lr=0.01)  # a tensor: read on the sender thread
            if reporter.should_stop():
                break
    elapsed = time.perf_counter() - t0
    if reporter is not None:
        reporter.close(timeout_s=0.0)  # the job's own exit; not part of its training time
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--serve", nargs=2, metavar=("DB", "DELAY_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], float(args.serve[1]))
        return
    logging.getLogger("forecaster_client").setLevel(logging.ERROR)  # the "down" warnings
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        up, up_address = start_service(Path(tmp) / "up.db", 0.0)
        slow, slow_address = start_service(Path(tmp) / "slow.db", 0.1)
        try:
            rows = []
            per_step_us = 0.0
            for name, address in [
                ("up", up_address),
                ("slow (100 ms per request)", slow_address),
                ("down", closed_port()),
            ]:
                ns, asks = report_latency(address, args.reports, f"latency-{name[:4]}")
                us = ns / 1e3
                rows.append(
                    [
                        name,
                        args.reports,
                        f"{np.median(us):.1f}",
                        f"{np.percentile(us, 99):.1f}",
                        f"{us.max():.0f}",
                        f"{np.median(asks) / 1e3:.2f}",
                    ]
                )
                per_step_us = max(per_step_us, np.median(us) + np.median(asks) / 1e3)
                print(rows[-1], file=sys.stderr)
            latency = markdown_table(
                ["service", "report() calls", "median µs", "p99 µs", "max µs", "should_stop() µs"],
                rows,
            )

            walls: dict[str, list[float]] = {"no plugin": [], "service down": [], "service up": []}
            addresses = {"no plugin": None, "service down": closed_port(), "service up": up_address}
            train(args.steps // 5, None, "warm-up")
            names = list(walls)
            for rep in range(args.repeats):
                # Each repeat runs the three variants back to back, in a rotating order, and
                # is compared within itself: the machine's slow drifts cancel out.
                for name in names[rep % 3 :] + names[: rep % 3]:
                    walls[name].append(train(args.steps, addresses[name], f"{name}-{rep}"))
            base = np.array(walls["no plugin"])
            wall_rows = []
            for name, w in walls.items():
                ratio = (np.array(w) / base - 1) * 100
                q1, med, q3 = np.percentile(ratio, [25, 50, 75])
                per_step = np.median((np.array(w) - base) / args.steps * 1e6)
                wall_rows.append(
                    [
                        name,
                        f"{np.median(w):.3f}",
                        f"{med:+.2f}% [{q1:+.2f}%, {q3:+.2f}%]",
                        f"{per_step:+.1f}",
                    ]
                )
            wall = markdown_table(
                [
                    "variant",
                    "median wall s",
                    "vs no plugin, same repeat: median [quartiles]",
                    "µs per step",
                ],
                wall_rows,
            )
            step_ms = float(np.median(base)) / args.steps * 1e3
        finally:
            for proc in (up, slow):
                proc.terminate()
                proc.wait(10)

    body = (
        "## Plugin overhead (`python benchmarks/plugin_overhead.py`)\n\n"
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"thread, Python {platform.python_version()}. Targets: report() median <= 20 µs and "
        "p99 <= 200 µs with the service up, slow and down; the service down for a whole run "
        "changes its wall time by < 1%.\n\n"
        f"### report() on the training thread\n\n{latency}\n\n"
        f"### A training run of {args.steps} steps of "
        f"{step_ms:.2f} ms ({args.repeats} repeats, rotating order)\n\n"
        f"{wall}\n\n"
        f"The plugin's direct cost on the training thread, report() + should_stop() "
        f"(medians, worst service state), is {per_step_us:.1f} µs a step: "
        f"{per_step_us / (step_ms * 1e3) * 100:.2f}% of this {step_ms:.2f} ms step; the run-to-run "
        "noise of this shared machine (the quartiles) is larger than that. "
        "The service runs on the same machine as the training here: with it up, its own "
        "work (storing, fitting, deciding) competes with the job for the cores, which a "
        "deployed service on its own machine does not.\n"
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('plugin_overhead', body)}", file=sys.stderr)


if __name__ == "__main__":
    main()
