"""deploy/k8s: the manifests parse, agree with each other and with the Dockerfile, and the
Deployment's command, environment, secret and probes serve when run here as stated."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forecaster.config import Settings, settings_table
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.test_dockerfile import free_port, read_dockerfile

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"


def documents() -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, from every file but the kustomization."""
    docs: dict[tuple[str, str], dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def container() -> dict:
    deployment = documents()[("Deployment", "forecaster")]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_the_deployment_runs_the_images_command_with_real_settings():
    c = container()
    dockerfile = read_dockerfile()
    assert c["command"] == dockerfile.entrypoint
    env = env_of(c)
    known = {variable for _, variable, _ in settings_table()}
    assert set(env) <= known, set(env) - known
    settings = Settings.from_env(env)  # every value parses as its setting
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == settings.port == int(dockerfile.final.env["FORECASTER_PORT"])
    assert ports["metrics"] == settings.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == settings.port
    pod = documents()[("Deployment", "forecaster")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert "useradd --create-home --uid 10001 forecaster" in dockerfile.text


def test_the_tokens_file_is_the_mounted_secret():
    c = container()
    env = env_of(c)
    pod = documents()[("Deployment", "forecaster")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(
        m for m in c["volumeMounts"] if env["FORECASTER_TOKENS_FILE"].startswith(m["mountPath"])
    )
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    secret = documents()[("Secret", secret_name)]
    key = Path(env["FORECASTER_TOKENS_FILE"]).name
    assert key in secret["stringData"]


def test_the_service_and_the_service_monitor_reach_the_pods():
    docs = documents()
    service = docs[("Service", "forecaster")]
    pod_labels = docs[("Deployment", "forecaster")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    monitor = docs[("ServiceMonitor", "forecaster")]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports


def test_the_deployment_serves_as_stated(tmp_path):
    """Its command and environment, with the Secret's tokens at the mounted path (moved under
    tmp_path), the volume in tmp_path and loopback ports; then its probe and its metrics."""
    c = container()
    env = env_of(c)
    secret = documents()[("Secret", "forecaster-tokens")]
    tokens = tmp_path / "tokens"
    tokens.write_text(secret["stringData"]["tokens"])
    port, metrics_port = free_port(), free_port()
    env.update(
        FORECASTER_HOST="127.0.0.1",
        FORECASTER_METRICS_HOST="127.0.0.1",
        FORECASTER_PORT=str(port),
        FORECASTER_METRICS_PORT=str(metrics_port),
        FORECASTER_TOKENS_FILE=str(tokens),
        FORECASTER_DB=env["FORECASTER_DB"].replace("/data", str(tmp_path)),
        FORECASTER_MODELS_DIR="none",
    )
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / c["command"][0]), *c["command"][1:]],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert f":{port}" in proc.stdout.readline()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            probe = c["readinessProbe"]["grpc"]
            check = health_pb2.HealthCheckRequest(service=probe.get("service", ""))
            status = health_pb2_grpc.HealthStub(channel).Check(check, timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.CurveServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListStudies(pb.ListStudiesRequest(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            admin = next(line.split()[0] for line in tokens.read_text().splitlines()
                         if line.endswith(" *"))  # fmt: skip
            stub.ListStudies(
                pb.ListStudiesRequest(),
                metadata=(("authorization", f"Bearer {admin}"),),
                timeout=10,
            )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert "forecaster_rpcs_total" in r.read().decode()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
