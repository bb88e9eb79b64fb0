"""TLS and mutual TLS on the real server, with certificates made for the test; the trainer's
client and `forecaster health` over TLS."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from forecaster.errors import StartupError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster_client.connection import Connection, tls_credentials
from tests.conftest import start_live_server, study_spec
from tests.tls import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def list_studies(channel: grpc.Channel) -> list[str]:
    stub = pb_grpc.CurveServiceStub(channel)
    return [s.spec.name for s in stub.ListStudies(pb.ListStudiesRequest(), timeout=5).studies]


def test_tls_serves_trusting_clients_and_refuses_plaintext(tmp_path, certs):
    live = start_live_server(
        tmp_path / "tls.db",
        models_dir="none",
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        auth_token="t0k",
    )
    try:
        address = live.address
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        with grpc.secure_channel(address, creds) as channel:
            stub = pb_grpc.CurveServiceStub(channel)
            stub.CreateStudy(
                pb.CreateStudyRequest(study=study_spec("s")),
                metadata=(("authorization", "Bearer t0k"),),
            )
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            list_studies(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        untrusted = grpc.ssl_channel_credentials(certs.other_ca.read_bytes())
        with grpc.secure_channel(address, untrusted) as channel, pytest.raises(grpc.RpcError):
            list_studies(channel)
        # The trainer's client: a root-certificate path and its token.
        conn = Connection(address, token="t0k", tls=str(certs.ca))
        try:
            run = conn.start_run("s", pb.RunSpec(name="r"))
            assert run.study == "s"
        finally:
            conn.close()
        # The container's HEALTHCHECK, over TLS.
        env = {
            **os.environ,
            "FORECASTER_TLS_CERT": str(certs.server_cert),
            "FORECASTER_TLS_KEY": str(certs.server_key),
        }
        health = subprocess.run(
            [sys.executable, "-m", "forecaster.cli", "health", "--address", address,
             "--root-cert", str(certs.ca)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert health.returncode == 0 and "SERVING" in health.stdout, health.stderr
    finally:
        live.stop()


def test_mutual_tls_requires_a_client_certificate(tmp_path, certs):
    live = start_live_server(
        tmp_path / "mtls.db",
        models_dir="none",
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca),
    )
    try:
        with_cert = tls_credentials(certs.ca, certs.client_cert, certs.client_key)
        with grpc.secure_channel(live.address, with_cert) as channel:
            assert list_studies(channel) == []
        without = tls_credentials(certs.ca)
        with grpc.secure_channel(live.address, without) as channel:
            with pytest.raises(grpc.RpcError) as info:
                list_studies(channel)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        live.stop()


def test_an_unreadable_certificate_is_a_startup_error_naming_the_setting(tmp_path, certs):
    with pytest.raises(StartupError, match="tls_cert"):
        start_live_server(
            tmp_path / "x.db",
            models_dir="none",
            tls_cert=str(tmp_path / "missing.pem"),
            tls_key=str(certs.server_key),
        )
