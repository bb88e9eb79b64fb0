"""The service with learned models: loaded at start, used over the network, reloaded without a
restart, and a bad artifact refused while the service keeps serving."""

from __future__ import annotations

import json
import shutil
import time

import grpc

from forecaster.models import artifacts, ensemble, gbm, sequence
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import points, start_live_server

VERSIONS = {m.NAME: m.VERSION for m in (gbm, sequence, ensemble)}


def forecast(stub, model: str) -> pb.Forecast:
    request = pb.ForecastCurveRequest(
        points=points(range(1, 60)), direction=pb.DIRECTION_MINIMIZE, max_step=600,
        forecaster=model,
    )  # fmt: skip
    return stub.ForecastCurve(request).forecast


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_learned_models_are_served_and_reloaded_without_a_restart(trained_models, tmp_path):
    models_dir = tmp_path / "models"
    shutil.copytree(trained_models, models_dir)
    server = start_live_server(tmp_path / "s.db", models_dir=str(models_dir), models_reload_s=0.1)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            for name in ("gbm", "sequence", "ensemble"):
                fc = forecast(stub, name)
                assert fc.model == name and fc.model_version == VERSIONS[name] and fc.converged
                q = list(fc.quantiles[0].values) if fc.quantiles else []
                assert q == sorted(q)
            bank = server.running.models
            first = bank.get("gbm")

            # A new artifact of the same version (say, retrained): picked up by the watcher.
            meta_file = models_dir / "gbm" / "meta.json"
            meta = json.loads(meta_file.read_text())
            artifacts.save(models_dir, "gbm", 1, first.files(), {**meta, "retrained": True})
            assert wait_for(lambda: bank.get("gbm") is not first)
            assert bank.get("gbm").meta.get("retrained") is True
            assert forecast(stub, "gbm").model_version == gbm.VERSION

            # An artifact from another version: refused, naming both; the old one serves on.
            serving = bank.get("gbm")
            meta["version"] = gbm.VERSION + 1
            meta_file.write_text(json.dumps(meta))
            assert wait_for(lambda: "gbm" in bank.refused)
            refusal = bank.refused["gbm"]
            assert f"version {gbm.VERSION + 1}" in refusal and f"version {gbm.VERSION}" in refusal
            assert bank.get("gbm") is serving
            fc = forecast(stub, "gbm")
            assert fc.model == "gbm" and fc.model_version == gbm.VERSION and fc.converged
    finally:
        server.stop()


def test_a_service_started_on_a_corrupt_artifact_serves_and_says_why(trained_models, tmp_path):
    models_dir = tmp_path / "models"
    shutil.copytree(trained_models, models_dir)
    (models_dir / "sequence" / "net.pt").write_bytes(b"not a network")
    server = start_live_server(tmp_path / "s.db", models_dir=str(models_dir), models_reload_s=0)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            assert forecast(stub, "gbm").model_version == gbm.VERSION  # what loaded, serves
            fc = forecast(stub, "sequence")
            assert not fc.converged and "corrupt" in fc.notes[0] and "net.pt" in fc.notes[0]
            # The ensemble needs the sequence model: refused too, and forecasts still come.
            fc = forecast(stub, "ensemble")
            assert not fc.converged and f"stacks sequence version {sequence.VERSION}" in fc.notes[0]
            assert forecast(stub, "power_law").converged
    finally:
        server.stop()
