"""Shared fixtures: a real server on a free loopback port, with a real SQLite file; a real
PostgreSQL server (tests/postgres.py) for the tests that ask for one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from forecaster.config import Settings
from forecaster.models.artifacts import ModelBank
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.app import RunningServer, build_engine, start_server
from tests.postgres import PostgresServer


@dataclass
class LiveServer:
    """A server running on its own event loop in a background thread."""

    address: str
    db_path: Path
    running: RunningServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self, grace_s: float = 2.0) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.running.stop(grace_s), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def start_live_server(db_path: Path, **settings: object) -> LiveServer:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fields: dict[str, object] = {"host": "127.0.0.1", "port": 0, "db": f"sqlite:///{db_path}"}
    config = Settings(**{**fields, **settings})  # type: ignore[arg-type]

    async def start() -> RunningServer:
        return await start_server(build_engine(config), config)

    running = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    return LiveServer(running.address, db_path, running, loop, thread)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path / "service.db", max_points_per_batch=100)
    yield server
    server.stop()


@pytest.fixture
def stub(live_server: LiveServer) -> Iterator[pb_grpc.CurveServiceStub]:
    with grpc.insecure_channel(live_server.address) as channel:
        yield pb_grpc.CurveServiceStub(channel)


def study_spec(name: str = "sweep", **kw: object) -> pb.StudySpec:
    fields: dict[str, object] = dict(
        name=name, metric="val_loss", direction=pb.DIRECTION_MINIMIZE, max_step=1000
    )
    fields.update(kw)
    return pb.StudySpec(**fields)  # type: ignore[arg-type]


def points(steps: range | list[int], values: list[float] | None = None) -> list[pb.Point]:
    steps = list(steps)
    if values is None:
        values = [2.0 + 3.0 * (max(s, 1) / 10.0) ** -0.5 for s in steps]
    return [pb.Point(step=s, value=v) for s, v in zip(steps, values, strict=True)]


@pytest.fixture(scope="session")
def shipped_models() -> ModelBank:
    """The learned models shipped in the package, as `forecaster serve` loads them by default."""
    return ModelBank.load("")


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic sources (the prior of corpus/synthetic.py) in the corpus schema."""
    from forecaster.corpus.synthetic import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "syn_a", n_tasks=8, runs_per_task=12, seed=11)
    write_corpus(root / "syn_b", n_tasks=6, runs_per_task=12, seed=12)
    return root


@pytest.fixture(scope="session")
def trained_models(synthetic_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gbm, sequence and ensemble trained by `forecaster train`'s code on the synthetic corpus,
    small enough to take seconds."""
    from forecaster.training import train_all

    out = tmp_path_factory.mktemp("models")
    train_all(
        synthetic_corpus, out, max_runs_per_task=12, synthetic_tasks=12, pretrain_epochs=1,
        finetune_epochs=2, gbm_rounds=25, workers=1, progress=False, calibration_runs_per_task=3,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for the session (tests/postgres.py), torn down after."""
    server = PostgresServer.start()
    yield server
    server.stop()
