"""Client tests talk to the real service over loopback; helpers to read what it stored."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from forecaster.curves import Points
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import LiveServer, start_live_server

# Modules whose framework import alone takes seconds (lightning about 6 s): every test in them
# is marked slow (pytestmark), and a run that leaves slow tests out (-m "not slow") does not
# even import them.
SLOW_TO_IMPORT = {"test_lightning.py", "test_keras.py", "test_huggingface.py", "test_ray_tune.py"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in SLOW_TO_IMPORT and not _selects_slow_tests(config):
        return True
    return None


def _selects_slow_tests(config: pytest.Config) -> bool:
    """Whether -m selects a test marked slow and nothing else."""
    markexpr = config.getoption("markexpr")
    if not markexpr:
        return True
    try:
        from _pytest.mark.expression import Expression  # -m's own parser

        return Expression.compile(markexpr).evaluate(lambda name, **_: name == "slow")
    except Exception:  # an expression (or a pytest) we cannot read this way: collect as usual
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """Reads back what the service stored, as an operator would."""

    def __init__(self, live_server: LiveServer) -> None:
        self.address = live_server.address
        self.store = live_server.running.engine.store
        self.channel = grpc.insecure_channel(live_server.address)
        self.stub = pb_grpc.CurveServiceStub(self.channel)

    def run(self, study: str, run: str) -> pb.Run:
        return self.stub.GetRun(pb.GetRunRequest(study=study, run=run)).run

    def runs(self, study: str) -> list[pb.Run]:
        return list(self.stub.ListRuns(pb.ListRunsRequest(study=study)).runs)

    def study(self, name: str) -> pb.Study:
        return self.stub.GetStudy(pb.GetStudyRequest(name=name)).study

    def points(self, study: str, run: str) -> Points:
        """The stored points, exactly (NaN included), from the service's own store."""
        return self.store.get_points(study, run)


@pytest.fixture
def service(live_server) -> Iterator[Service]:
    s = Service(live_server)
    yield s
    s.channel.close()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for a whole module, for tests that each report to studies of their own."""
    server = start_live_server(
        tmp_path_factory.mktemp("service") / "service.db", max_points_per_batch=100
    )
    s = Service(server)
    yield s
    s.channel.close()
    server.stop()
