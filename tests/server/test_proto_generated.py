"""The committed generated code must be what `make proto` makes from the .proto today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "committed_dir",
    [
        REPO / "forecaster" / "server" / "_proto",
        REPO / "trainer_plugins" / "forecaster_client" / "_proto",
    ],
    ids=["service", "client"],
)
def test_generated_code_is_up_to_date(tmp_path, committed_dir):
    pytest.importorskip("grpc_tools", reason="needs the dev extra: pip install -e '.[dev]'")
    spec = importlib.util.spec_from_file_location("generate", REPO / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = {p.name: p.read_text() for p in generate.generate(tmp_path)}
    committed = {
        p.name: p.read_text()
        for p in committed_dir.iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit the result."


def test_every_enum_has_an_unspecified_zero():
    from forecaster.server._proto import forecaster_pb2 as pb

    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name


def test_every_public_rpc_of_the_design_is_served():
    from forecaster.server._proto import forecaster_pb2 as pb

    methods = set(pb.DESCRIPTOR.services_by_name["CurveService"].methods_by_name)
    assert methods == {
        "CreateStudy",
        "StartRun",
        "ReportMetrics",
        "StreamMetrics",
        "GetForecast",
        "GetDecision",
        "FinishRun",
        "GetRun",
        "ListRuns",
        "GetStudy",
        "ListStudies",
        "ForecastCurve",
        # issue 20: the remote stop and the reads behind the dashboard, CLI and client API
        "StopRun",
        "ListPoints",
        "ListDecisionHistory",
        "ListRunSummaries",
        "GetRunSummary",
        # issue 17: which running or paused run deserves compute next (freeze-thaw)
        "RankRuns",
    }
