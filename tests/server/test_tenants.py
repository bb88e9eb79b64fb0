"""Tokens and tenants through the real server, RPC by RPC: a tenant reads, lists and writes
only its own studies and cannot learn that another tenant's exist; the admin sees all."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from forecaster.config import Settings
from forecaster.errors import StartupError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.auth import Authenticator, read_tokens_file
from forecaster.tenancy import ADMIN, Tenant
from tests.client.conftest import free_port
from tests.conftest import points, start_live_server, study_spec

TOKENS = "# token tenant\ntok-a team-a\ntok-b team-b\n\ntok-root *\n"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class As:
    """A stub whose every call carries one token."""

    def __init__(self, channel: grpc.Channel, token: str | None) -> None:
        self._stub = pb_grpc.CurveServiceStub(channel)
        self._metadata = bearer(token) if token else ()

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


def status(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        result = call(request)
        if not hasattr(result, "SerializeToString"):  # a stream: read it
            list(result)
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tenants")
    (folder / "tokens").write_text(TOKENS)
    live = start_live_server(
        folder / "t.db",
        models_dir="none",
        tokens_file=str(folder / "tokens"),
        auth_token="legacy",
        allow_manual_stop=True,  # StopRun must be refused by tenant, not by the setting
        http_port=free_port(),
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def seeded(channel):
    """team-a's study "s" with a run "r" of 30 points; team-b has nothing yet."""
    a = As(channel, "tok-a")
    a.CreateStudy(pb.CreateStudyRequest(study=study_spec("s", target=2.0)))
    a.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="r")))
    a.ReportMetrics(pb.ReportMetricsRequest(study="s", run="r", points=points(range(1, 31))))
    return a


def reads_and_writes(study: str, run: str) -> list[tuple[str, object]]:
    """Every RPC that names a study, with a request naming (study, run)."""
    report = pb.ReportMetricsRequest(study=study, run=run, points=points([100]))
    return [
        ("GetStudy", pb.GetStudyRequest(name=study)),
        ("StartRun", pb.StartRunRequest(study=study, run=pb.RunSpec(name="new"))),
        ("ReportMetrics", report),
        ("StreamMetrics", iter([report])),
        ("GetForecast", pb.GetForecastRequest(study=study, run=run, at_steps=[500])),
        ("GetDecision", pb.GetDecisionRequest(study=study, run=run)),
        ("FinishRun", pb.FinishRunRequest(study=study, run=run, state=pb.RUN_STATE_FAILED)),
        ("GetRun", pb.GetRunRequest(study=study, run=run)),
        ("ListRuns", pb.ListRunsRequest(study=study)),
        ("StopRun", pb.StopRunRequest(study=study, run=run)),
        ("ListPoints", pb.ListPointsRequest(study=study, run=run)),
        ("ListDecisionHistory", pb.ListDecisionHistoryRequest(study=study, run=run)),
        ("ListRunSummaries", pb.ListRunSummariesRequest(study=study)),
        ("GetRunSummary", pb.GetRunSummaryRequest(study=study, run=run)),
        ("RankRuns", pb.RankRunsRequest(study=study)),
    ]


@pytest.mark.parametrize("index", range(len(reads_and_writes("s", "r"))))
def test_another_tenants_study_is_not_found_exactly_as_a_missing_one(channel, seeded, index):
    b = As(channel, "tok-b")
    name, request = reads_and_writes("s", "r")[index]
    code, details = status(getattr(b, name), request)
    _, missing_request = reads_and_writes("nothing-here", "r")[index]
    missing_code, missing_details = status(getattr(b, name), missing_request)
    assert code == grpc.StatusCode.NOT_FOUND and missing_code == code
    assert details == missing_details.replace("nothing-here", "s")  # nothing tells them apart
    assert "team-a" not in details and "team-b" not in details
    # team-a's run is untouched
    run = seeded.GetRun(pb.GetRunRequest(study="s", run="r")).run
    assert run.n_points == 30 and run.state == pb.RUN_STATE_RUNNING


def test_a_tenant_lists_only_its_own_and_names_come_back_as_sent(channel, seeded):
    b = As(channel, "tok-b")
    assert list(b.ListStudies(pb.ListStudiesRequest()).studies) == []
    created = b.CreateStudy(pb.CreateStudyRequest(study=study_spec("s", target=9.0)))
    assert created.created  # its own "s": no ALREADY_EXISTS that would betray team-a's
    assert created.study.spec.name == "s"
    run = b.StartRun(pb.StartRunRequest(study="s", run=pb.RunSpec(name="r"))).run
    assert run.study == "s" and run.n_points == 0
    assert [s.spec.target for s in b.ListStudies(pb.ListStudiesRequest()).studies] == [9.0]
    a_studies = seeded.ListStudies(pb.ListStudiesRequest()).studies
    assert [(s.spec.name, s.spec.target) for s in a_studies] == [("s", 2.0)]
    # A name spelling another tenant's prefix is just a name of one's own.
    code, _ = status(b.GetStudy, pb.GetStudyRequest(name="team-a/s"))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("token", ["tok-root", "legacy"])
def test_the_admin_sees_every_tenants_studies(channel, seeded, token):
    root = As(channel, token)
    names = {s.spec.name for s in root.ListStudies(pb.ListStudiesRequest()).studies}
    assert "team-a/s" in names
    run = root.GetRun(pb.GetRunRequest(study="team-a/s", run="r")).run
    assert run.n_points == 30 and run.study == "team-a/s"


@pytest.mark.parametrize("token", [None, "wrong", "tok-ab", "tok-"])
def test_unknown_tokens_are_unauthenticated_on_every_kind_of_rpc(channel, token):
    anyone = As(channel, token)
    report = pb.ReportMetricsRequest(study="s", run="r", points=points([1]))
    for call, request in [
        (anyone.ListStudies, pb.ListStudiesRequest()),
        (anyone.ReportMetrics, report),
        (anyone.StreamMetrics, iter([report])),
    ]:
        code, details = status(call, request)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details


def test_health_and_reflection_are_open_by_default(channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    )
    assert replies[0].list_services_response.service


def test_health_and_reflection_can_be_closed(tmp_path):
    live = start_live_server(
        tmp_path / "c.db",
        models_dir="none",
        auth_token="t0k",
        open_health=False,
        open_reflection=False,
    )
    try:
        with grpc.insecure_channel(live.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            code, _ = status(health.Check, health_pb2.HealthCheckRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            watch = health.Watch(health_pb2.HealthCheckRequest())
            code, _ = status(lambda _: watch, None)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            ok = health.Check(health_pb2.HealthCheckRequest(), metadata=bearer("t0k"))
            assert ok.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            code, _ = status(reflect.ServerReflectionInfo, request)
            assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        live.stop()


def test_the_authenticator_is_the_seam_for_another_transport(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    auth = Authenticator(read_tokens_file(tokens))
    assert auth.tenant_for("Bearer tok-a") == Tenant("team-a")
    assert auth.tenant_for("bearer tok-root") == ADMIN
    assert auth.tenant_for("Bearer nope") is None and auth.tenant_for(None) is None
    assert Authenticator({}).tenant_for(None) == ADMIN  # no tokens: open, as before


@pytest.mark.parametrize(
    "text, words",
    [("tok-a\n", "line 1"), ("t x\nt y\n", "line 2"), ("t bad/name\n", "tenant name")],
)
def test_a_bad_tokens_file_is_refused_naming_the_line(tmp_path, text, words):
    tokens = tmp_path / "tokens"
    tokens.write_text(text)
    with pytest.raises(StartupError, match=words):
        read_tokens_file(tokens)


def test_a_refused_stream_is_logged_unauthenticated(channel, caplog):
    # Before: a TypeError in the interceptor, UNKNOWN for the client and "OK" in the log.
    caplog.set_level(logging.INFO, logger="forecaster.access")
    report = pb.ReportMetricsRequest(study="s", run="r", points=points([1]))
    code, _ = status(As(channel, "wrong").StreamMetrics, iter([report, report]))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(50):
        lines = [r.getMessage() for r in caplog.records if "StreamMetrics" in r.getMessage()]
        if lines:
            break
        time.sleep(0.05)
    assert lines == ["/forecaster.v1.CurveService/StreamMetrics UNAUTHENTICATED"]


def page(server, path: str, token: str | None) -> tuple[int, str]:
    """GET a dashboard page over real HTTP with a bearer token."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{server.running.http.port}{path}"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_dashboard_shows_a_tenant_its_own_studies_only(server, channel, seeded):
    seeded.CreateStudy(pb.CreateStudyRequest(study=study_spec("only-a")))
    seeded.StartRun(pb.StartRunRequest(study="only-a", run=pb.RunSpec(name="r")))
    code, mine = page(server, "/", "tok-a")
    assert code == 200 and "study?name=only-a" in mine and "team-a" not in mine
    code, theirs = page(server, "/", "tok-b")
    assert code == 200 and "only-a" not in theirs
    assert page(server, "/study?name=only-a", "tok-b")[0] == 404
    assert page(server, "/run?study=only-a&run=r", "tok-b")[0] == 404
    assert page(server, "/study?name=only-a", "tok-a")[0] == 200
    assert page(server, "/", "tok-unknown")[0] == 401
    code, admin = page(server, "/", "tok-root")
    assert code == 200 and "team-a/only-a" in admin


def test_tokens_from_the_environment_give_each_tenant_its_own_studies(tmp_path):
    # `forecaster serve` as a Secret mapped to FORECASTER_TOKENS starts it: no tokens file.
    env = {
        **os.environ,
        "FORECASTER_MODELS_DIR": "none",
        "FORECASTER_TOKENS": "env-a team-a, env-b team-b\nenv-root *",
    }
    env.pop("FORECASTER_TOKENS_FILE", None)
    env.pop("FORECASTER_AUTH_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0",
         "--db", str(tmp_path / "env.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on \S+:(\d+)", line)
        assert match, f"unexpected first line from serve: {line!r}"
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as ch:
            a, b, root = As(ch, "env-a"), As(ch, "env-b"), As(ch, "env-root")
            a.CreateStudy(pb.CreateStudyRequest(study=study_spec("mine")))
            assert [s.spec.name for s in a.ListStudies(pb.ListStudiesRequest()).studies] == ["mine"]
            assert list(b.ListStudies(pb.ListStudiesRequest()).studies) == []
            code, _ = status(b.GetStudy, pb.GetStudyRequest(name="mine"))
            assert code == grpc.StatusCode.NOT_FOUND
            names = [s.spec.name for s in root.ListStudies(pb.ListStudiesRequest()).studies]
            assert names == ["team-a/mine"]
            code, _ = status(As(ch, "tok-a").ListStudies, pb.ListStudiesRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_bad_tokens_variable_is_refused_naming_the_entry_not_the_token(tmp_path):
    with pytest.raises(StartupError, match="FORECASTER_TOKENS entry 2") as info:
        Authenticator.from_settings(Settings(tokens="ok-token team-a,secret-one"))
    assert "secret-one" not in str(info.value)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    with pytest.raises(StartupError, match="also in tokens_file"):
        Authenticator.from_settings(Settings(tokens_file=str(tokens), tokens="tok-a team-z"))
    both = Authenticator.from_settings(Settings(tokens_file=str(tokens), tokens="env-c team-c"))
    assert both.tenant_for("Bearer env-c") == Tenant("team-c")
    assert both.tenant_for("Bearer tok-b") == Tenant("team-b")
