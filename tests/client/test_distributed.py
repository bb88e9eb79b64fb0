"""torch.distributed: only rank 0 talks to the service; every rank stops at the same step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from forecaster.server._proto import forecaster_pb2 as pb
from tests.client import ddp_worker
from tests.client.conftest import free_port


@pytest.mark.slow  # two spawned interpreters, each importing torch
def test_two_gloo_ranks_stop_at_the_same_step_and_only_rank_0_reports(service, tmp_path):
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    init = f"tcp://127.0.0.1:{free_port()}"
    context = mp.start_processes(
        _rank, args=(init, service.address, outs), nprocs=2, join=False, start_method="spawn"
    )
    while not context.join(timeout=120):
        pass
    results = [json.loads(Path(o).read_text()) for o in outs]

    assert results[0]["connected"] and not results[1]["connected"]
    stops = [r["stopped_at"] for r in results]
    assert stops[0] is not None and stops[0] == stops[1]
    assert ddp_worker.DIVERGES_AT <= stops[0] < ddp_worker.MAX_STEPS
    assert [r["reason"] for r in results] == ["diverged", "diverged"]

    runs = service.runs("ddp")
    assert [r.spec.name for r in runs] == ["run"]
    assert runs[0].state == pb.RUN_STATE_STOPPED
    values = service.points("ddp", "run").values
    assert not any(v == -1.0 for v in values)  # nothing from rank 1
    assert math.isnan(values[-1])


def _rank(rank: int, init: str, address: str, outs: list[str]) -> None:
    ddp_worker.run_rank(rank, 2, init, address, outs[rank])
