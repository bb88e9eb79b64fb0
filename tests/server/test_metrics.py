"""The Prometheus endpoint of a real server, scraped over HTTP after real RPCs."""

from __future__ import annotations

import socket
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecaster.errors import StartupError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, start_live_server, study_spec

METHOD = "/forecaster.v1.CurveService/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name and labels -> value, from the live endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_rpcs_points_decisions_fits_cache_and_store(tmp_path):
    port = free_port()
    live = start_live_server(tmp_path / "m.db", metrics_port=port)
    try:
        with grpc.insecure_channel(live.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("s", target=2.5)))
            stub.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="r")))
            for lo in range(1, 241, 80):  # past the policy's grace (step 100): it forecasts
                stub.ReportMetrics(
                    pb.ReportMetricsRequest(study="s", run="r", points=points(range(lo, lo + 80)))
                )
            for _ in range(3):
                stub.GetDecision(pb.GetDecisionRequest(study="s", run="r"))
            with pytest.raises(grpc.RpcError):
                stub.GetStudy(pb.GetStudyRequest(name="missing"))
        # An RPC is counted as it ends, just after its caller has the answer: scrape until
        # the last one is in (a loaded machine may take a moment).
        last = ("forecaster_rpcs_total", (("code", "NOT_FOUND"), ("method", METHOD + "GetStudy")))
        deadline = time.monotonic() + 10
        m = scrape(live.running.metrics_port)
        while last not in m and time.monotonic() < deadline:
            time.sleep(0.1)
            m = scrape(live.running.metrics_port)
    finally:
        live.stop()

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("forecaster_rpcs_total", method=METHOD + "ReportMetrics", code="OK") == 3
    assert value("forecaster_rpcs_total", method=METHOD + "GetDecision", code="OK") == 3
    assert value("forecaster_rpcs_total", method=METHOD + "GetStudy", code="NOT_FOUND") == 1
    count = value("forecaster_rpc_seconds_count", method=METHOD + "ReportMetrics", code="OK")
    assert count == 3
    assert value("forecaster_points_stored_total") == 240
    decisions = sum(v for (name, _), v in m.items() if name == "forecaster_decisions_total")
    assert decisions == 3
    fits = {dict(labels)["model"]: v for (name, labels), v in m.items()
            if name == "forecaster_forecast_fit_seconds_count"}  # fmt: skip
    assert fits and all(v >= 1 for v in fits.values())
    # Each GetDecision after the last report found the run in the cache.
    assert value("forecaster_forecast_cache_total", result="hit") >= 3
    assert value("forecaster_store_seconds_count", operation="append_points") == 3


def test_metrics_port_in_use_is_a_startup_error_naming_the_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"port {port}.*metrics_port"):
            start_live_server(tmp_path / "x.db", models_dir="none", metrics_port=port)
