"""`forecaster demo`: simulated training runs reporting to a real service over gRPC.

Six runs of one study share a loss target: one winner reaches it, three will plateau above it
(their forecasts say so, by more than the policy's margin, and they are stopped as
TARGET_UNREACHABLE), two diverge (one to NaN,
one explodes). Every round each running run reports a batch; the table shows each run's
forecast of its final loss and its decision as they evolve.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import TextIO

import grpc
import numpy as np
from google.protobuf import struct_pb2
from tqdm import tqdm

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc

MAX_STEP = 2000
TARGET = 2.0
STUDY = "demo-lr-sweep"


@dataclass(frozen=True)
class SimulatedRun:
    name: str
    floor: float  # the loss it converges to
    amplitude: float
    exponent: float
    diverge_at: int | None = None  # step at which it blows up
    diverge_to: float = math.nan

    def loss(self, steps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        base = self.floor + self.amplitude * (steps / 10.0) ** -self.exponent
        values = base + rng.normal(0.0, 0.01, len(steps))
        if self.diverge_at is not None:
            values = np.where(steps >= self.diverge_at, self.diverge_to, values)
        return values


RUNS = (
    SimulatedRun("lr=3e-4 (winner)", 1.55, 4.0, 0.50),
    SimulatedRun("lr=1e-4", 2.45, 4.0, 0.45),
    SimulatedRun("lr=3e-5", 2.50, 4.0, 0.35),
    SimulatedRun("lr=1e-3", 2.3, 4.0, 0.40),
    SimulatedRun("lr=1e-2 (diverges)", 1.50, 4.0, 0.5, diverge_at=600),
    SimulatedRun("lr=3e-2 (explodes)", 1.50, 4.0, 0.5, diverge_at=400, diverge_to=40.0),
)
GRACE_STEPS = 200  # no verdict on the target before this step: the table shows WARMUP first

_REASONS = MappingProxyType({v: k.removeprefix("REASON_").lower() for k, v in pb.Reason.items()})


def _row(name: str, step: int, value: float, fc: pb.Forecast | None, d: pb.Decision) -> str:
    if fc is not None and fc.quantiles:
        q = fc.quantiles[0].values
        forecast = f"{q[2]:6.3f} [{q[0]:6.3f}, {q[4]:6.3f}]"
    else:
        forecast = "-"
    action = "STOP" if d.action == pb.ACTION_STOP else "continue"
    return (
        f"{name:<20} {step:>5} {value:>8.3f}  {forecast:<26} {action:<8} "
        f"{_REASONS.get(d.reason, '?'):<18} {d.explanation}"
    )


async def fresh_study_name(stub: pb_grpc.CurveServiceStub) -> str:
    """STUDY, or STUDY-2, -3...: the first name no earlier demo on this service has used, so
    a second demo runs its runs again instead of finding them all finished."""
    taken = {s.spec.name for s in (await stub.ListStudies(pb.ListStudiesRequest())).studies}
    name, n = STUDY, 1
    while name in taken:
        n += 1
        name = f"{STUDY}-{n}"
    return name


async def run_demo(
    address: str, batch: int = 50, seed: int = 0, out: TextIO = sys.stdout
) -> dict[str, pb.Decision]:
    """Drives the simulation against the service at address; returns each run's last decision."""
    rng = np.random.default_rng(seed)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        study = await fresh_study_name(stub)
        if study != STUDY:
            print(
                f"a demo already ran on this service (study {STUDY!r}); this one is {study!r}",
                file=out,
            )
        params = struct_pb2.Struct()
        params.update({"grace_steps": GRACE_STEPS})
        await stub.CreateStudy(
            pb.CreateStudyRequest(
                study=pb.StudySpec(
                    name=study,
                    metric="val_loss",
                    direction=pb.DIRECTION_MINIMIZE,
                    max_step=MAX_STEP,
                    target=TARGET,
                    policy=pb.PolicySettings(name="default", params=params),
                )
            )
        )
        for r in RUNS:
            await stub.StartRun(pb.StartRunRequest(study=study, run=pb.RunSpec(name=r.name)))
        decisions: dict[str, pb.Decision] = {}
        stopped: set[str] = set()
        header = (
            f"{'run':<20} {'step':>5} {'loss':>8}  {'forecast at 2000 [5%,95%]':<26} "
            f"{'action':<8} {'reason':<18} why"
        )
        rounds = MAX_STEP // batch
        bar = tqdm(total=rounds, desc="simulated training", unit="round", file=sys.stderr)
        for i in range(rounds):
            lo, hi = i * batch + 1, (i + 1) * batch
            steps = np.arange(lo, hi + 1)
            rows = []
            for r in RUNS:
                if r.name in stopped:
                    continue
                run_info = (await stub.GetRun(pb.GetRunRequest(study=study, run=r.name))).run
                if run_info.state != pb.RUN_STATE_RUNNING or run_info.last_step >= hi:
                    stopped.add(r.name)
                    continue
                keep = steps > run_info.last_step
                values = r.loss(steps, rng)
                points = [
                    pb.Point(step=int(s), value=float(v))
                    for s, v in zip(steps[keep], values[keep], strict=True)
                ]
                resp = await stub.ReportMetrics(
                    pb.ReportMetricsRequest(study=study, run=r.name, points=points)
                )
                d = resp.decision
                fc = None
                if math.isfinite(values[-1]):
                    fc = (
                        await stub.GetForecast(pb.GetForecastRequest(study=study, run=r.name))
                    ).forecast
                decisions[r.name] = d
                rows.append(_row(r.name, hi, float(values[-1]), fc, d))
                if d.action == pb.ACTION_STOP:
                    stopped.add(r.name)
                    state = (
                        pb.RUN_STATE_FINISHED
                        if d.reason in (pb.REASON_BUDGET_EXHAUSTED, pb.REASON_TARGET_REACHED)
                        else pb.RUN_STATE_STOPPED
                    )
                    await stub.FinishRun(pb.FinishRunRequest(study=study, run=r.name, state=state))
            bar.update(1)
            if rows and (i % 8 == 0 or any("STOP" in row for row in rows)):
                bar.clear()
                print(f"\n-- step {hi} --\n{header}", file=out)
                for row in rows:
                    print(row, file=out)
                bar.refresh()
            if len(stopped) == len(RUNS):
                break
        bar.close()
        print("\nfinal decisions:", file=out)
        for name, d in decisions.items():
            action = "STOP" if d.action == pb.ACTION_STOP else "continue"
            print(
                f"  {name:<20} {action:<8} {_REASONS[d.reason]:<18} at step {d.at_step}: "
                f"{d.explanation}",
                file=out,
            )
        saved = sum(d.expected_saved_steps for d in decisions.values())
        print(f"\nsteps saved by stopping early: {saved} of {len(RUNS) * MAX_STEP}", file=out)
        print(
            f"look around: forecaster runs {study!r} --address {address}; "
            f"forecaster why {study!r} RUN --address {address}",
            file=out,
        )
        return decisions


def main(address: str | None, db: str | None) -> int:
    """Runs the demo against address, or against a service started in-process."""
    if address:
        asyncio.run(run_demo(address))
        return 0

    async def in_process() -> None:
        import tempfile

        from forecaster.config import Settings
        from forecaster.server.app import build_engine, start_server

        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(port=0, db=db or f"sqlite:///{tmp}/demo.db")
            running = await start_server(build_engine(settings), settings)
            print(
                f"started an in-process service on {running.address} (database {settings.db_url})",
                file=sys.stderr,
            )
            try:
                await run_demo(running.address)
            finally:
                await running.stop(1.0)

    asyncio.run(in_process())
    return 0
