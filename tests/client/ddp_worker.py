"""One rank of the 2-process gloo test (a module of its own: spawned processes import it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch.distributed as dist

from forecaster_client import Reporter

MAX_STEPS = 3000
DIVERGES_AT = 40


def run_rank(rank: int, world_size: int, init: str, address: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        reporter = Reporter(address, "ddp", "run", max_step=MAX_STEPS, flush_interval_s=0.02)
        stopped_at = None
        for step in range(1, MAX_STEPS + 1):
            # Rank 1 reports values no run ever has: they must never reach the service.
            value = -1.0 if rank else (float("nan") if step >= DIVERGES_AT else 5.0 / step)
            reporter.report(step, value)
            if reporter.should_stop():  # a collective: rank 0's answer on both ranks
                stopped_at = step
                break
            time.sleep(0.002)
        reporter.close()
        Path(out).write_text(
            json.dumps(
                {
                    "stopped_at": stopped_at,
                    "reason": reporter.decision.reason,
                    "connected": reporter._thread is not None,
                }
            )
        )
    finally:
        dist.destroy_process_group()
