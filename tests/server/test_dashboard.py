"""The dashboard in a real headless Chromium, against the real service with a study of a few
runs (one stopped by the policy, one finished, two running); its access check; its stop button."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from forecaster.errors import StartupError
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests import browser
from tests.client.conftest import free_port
from tests.conftest import LiveServer, start_live_server, study_spec

TOKEN = "s3cret-token"


def curve(step: int, scale: float) -> float:
    return 2.0 + scale * 3.0 * (step / 10.0) ** -0.5


def fill_study(address: str) -> None:
    """sweep: "done" ran its budget, "lagging" and "leading" still run, "exploded" went NaN
    and was stopped (DIVERGED); every run has a planned cosine schedule."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        stub.CreateStudy(
            pb.CreateStudyRequest(study=study_spec("sweep", target=2.2)), metadata=metadata
        )
        plan = pb.LrSchedule(kind=pb.SCHEDULE_KIND_COSINE, peak_lr=0.1, total_steps=1000)
        for name, scale, last in [
            ("done", 1.0, 1000), ("leading", 1.1, 400), ("lagging", 2.0, 400),
            ("exploded", 1.5, 300),
        ]:  # fmt: skip
            spec = pb.RunSpec(name=name, lr_schedule=plan)
            stub.StartRun(pb.StartRunRequest(study="sweep", run=spec), metadata=metadata)
            steps = list(range(10, last + 1, 10))
            values = [curve(s, scale) for s in steps]
            if name == "exploded":
                values[-1] = math.nan
            for i in range(0, len(steps), 20):
                batch = [
                    pb.Point(step=s, value=v, lr=0.1)
                    for s, v in zip(steps[i : i + 20], values[i : i + 20], strict=True)
                ]
                stub.ReportMetrics(
                    pb.ReportMetricsRequest(study="sweep", run=name, points=batch),
                    metadata=metadata,
                )
        for name, state in [("done", pb.RUN_STATE_FINISHED), ("exploded", pb.RUN_STATE_STOPPED)]:
            stub.FinishRun(
                pb.FinishRunRequest(study="sweep", run=name, state=state), metadata=metadata
            )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    port = free_port()
    server = start_live_server(
        tmp_path_factory.mktemp("dash") / "s.db",
        http_port=port,
        auth_token=TOKEN,
        allow_manual_stop=True,
        dashboard_refresh_s=0.5,
    )
    fill_study(server.address)
    yield server, f"http://127.0.0.1:{port}"
    server.stop()


def signed(url: str) -> str:
    """The address with ?token=, which signs the browser in (cookie) and redirects."""
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode({"token": TOKEN})


def fetch(url: str, *, token: str | None = TOKEN, data: dict[str, str] | None = None):
    request = urllib.request.Request(
        url, data=None if data is None else urllib.parse.urlencode(data).encode()
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_studies_page_lists_the_study_with_its_counts_and_saved_steps(dashboard):
    _, base = dashboard
    dom = browser.dump_dom(signed(base + "/"))
    assert 'href="/study?name=sweep"' in dom
    row = re.search(r"<tr>.*?sweep.*?</tr>", dom, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    # running 2, stopped 1, finished 1, failed 0; the stopped run saved 1000 - 300 steps
    assert cells[5:10] == ["2", "1", "1", "0", "700"]


def test_the_study_page_draws_every_run_the_fans_the_levels_and_the_stop(dashboard, tmp_path):
    _, base = dashboard
    url = signed(base + "/study?name=sweep")
    dom = browser.dump_dom(url)
    for name in ("done", "leading", "lagging", "exploded"):
        assert f'class="curve" data-run="{name}"' in dom
        assert f'<tr class="run" data-run="{name}">' in dom
    fans = set(re.findall(r'<g class="fan" data-run="([^"]+)"', dom))
    assert fans == {"leading", "lagging"}  # the running runs only
    assert dom.count('class="fan-90"') == 2 and dom.count('class="fan-50"') == 2
    assert 'class="incumbent"' in dom and 'class="target"' in dom
    marks = re.findall(r'<g class="stop-mark">.*?<text[^>]*>([^<]+)</text>', dom)
    assert marks == ["exploded: stopped: diverged"]
    assert "stop / diverged" in dom and "the metric is nan at step 300" in dom
    png = browser.screenshot(url, tmp_path / "study.png", size=(1280, 1100))
    assert not browser.is_blank(png)


def test_the_log_step_option_redraws_on_a_log_axis(dashboard):
    _, base = dashboard
    dom = browser.dump_dom(signed(base + "/study?name=sweep&log=1"))
    assert "step (log scale)" in dom and "<b>log steps</b>" in dom
    assert '<g class="fan" data-run="leading"' in dom


def test_the_run_page_shows_curve_fan_history_config_schedule_and_stop_button(dashboard, tmp_path):
    _, base = dashboard
    url = signed(base + "/run?study=sweep&run=leading")
    dom = browser.dump_dom(url)
    assert '<g class="fan" data-run="leading"' in dom and 'class="fan-90"' in dom
    assert 'class="schedule"' in dom and "lr (cosine plan)" in dom  # the plan under the curve
    assert dom.count('class="observed-lr"') > 10  # and the lr the run reported
    history = re.findall(r'<tr class="change">(.*?)</tr>', dom, re.S)
    assert history, "the decision history is shown"
    assert 'class="stop-button"' in dom and "Stop this run" in dom
    assert '<pre class="config">{}</pre>' in dom
    png = browser.screenshot(url, tmp_path / "run.png", size=(1280, 1400))
    assert not browser.is_blank(png)
    stopped = browser.dump_dom(signed(base + "/run?study=sweep&run=exploded"))
    assert "stop / diverged" in stopped and 'class="stop-button"' not in stopped  # not running


def test_the_page_refreshes_itself_in_place(dashboard):
    _, base = dashboard
    dom = browser.dump_dom(signed(base + "/study?name=sweep"), budget_ms=4000)
    count = re.search(r'<span id="refreshed">(\d+)</span>', dom)
    assert count is not None and int(count.group(1)) >= 2, "the script swapped #content in"
    assert '<g class="fan" data-run="leading"' in dom  # and the chart is still there


def test_pages_need_the_token_as_a_header_or_the_login_cookie(dashboard):
    _, base = dashboard
    status, body = fetch(base + "/study?name=sweep", token=None)
    assert status == 401 and 'name="token"' in body and "sweep" not in body.split("<main>")[1][:60]
    assert fetch(base + "/", token="wrong")[0] == 401
    assert fetch(base + "/")[0] == 200
    # the login form sets the cookie; the cookie alone then opens the pages
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"token": TOKEN, "next": "/study?name=sweep"}).encode()
    with opener.open(base + "/login", data=form, timeout=30) as reply:
        assert reply.status == 200 and reply.url.endswith("/study?name=sweep")
        assert 'data-run="leading"' in reply.read().decode()
    # a login never redirects off the site
    form = urllib.parse.urlencode({"token": TOKEN, "next": "http://elsewhere/"}).encode()
    with opener.open(base + "/login", data=form, timeout=30) as reply:
        assert urllib.parse.urlsplit(reply.url).path == "/"


def test_unknown_pages_and_names_are_errors_a_person_can_read(dashboard):
    _, base = dashboard
    status, body = fetch(base + "/study?name=nope")
    assert status == 404 and "no study named &#x27;nope&#x27;" in body
    status, body = fetch(base + "/run?study=sweep")
    assert status == 400 and "?run=" in body


def test_the_stop_button_stops_the_run_for_its_reporter(tmp_path):
    """The button's form, as the browser posts it; then the trainer's Reporter says MANUAL."""
    from forecaster_client import Reporter

    port = free_port()
    server = start_live_server(tmp_path / "s.db", http_port=port, allow_manual_stop=True)
    base = f"http://127.0.0.1:{port}"
    try:
        reporter = Reporter(server.address, "btn", "r", max_step=1000, flush_interval_s=0.02)
        for s in range(10, 201, 10):
            reporter.report(s, curve(s, 1.0))
        assert reporter.flush(20) and not reporter.should_stop()
        page = browser.dump_dom(base + "/run?study=btn&run=r")
        form = re.search(
            r'<form class="stop-form" method="post" action="(/stop)">(.*?)</form>', page, re.S
        )
        assert form is not None
        fields = dict(
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(2))
        )
        status, body = fetch(base + form.group(1), token=None, data={**fields, "note": "bob"})
        assert status == 200 and "stop / manual" in body and "Stop requested" in body
        for s in range(210, 1000, 10):
            reporter.report(s, curve(s, 1.0))
            if reporter.flush(5) and reporter.should_stop():
                break
        assert reporter.should_stop() and reporter.decision.reason == "manual"
        assert "bob" in reporter.decision.explanation
        reporter.close()
    finally:
        server.stop()


def test_without_allow_manual_stop_there_is_no_button_and_a_post_is_refused(tmp_path):
    port = free_port()
    server = start_live_server(tmp_path / "s.db", http_port=port)
    base = f"http://127.0.0.1:{port}"
    try:
        fill_study_plain(server.address)
        status, body = fetch(base + "/run?study=plain&run=r", token=None)
        assert status == 200 and 'class="stop-button"' not in body
        status, body = fetch(base + "/stop", token=None, data={"study": "plain", "run": "r"})
        assert status == 409 and "--allow-manual-stop" in body
    finally:
        server.stop()


def fill_study_plain(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.CurveServiceStub(channel)
        stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("plain")))
        stub.StartRun(pb.StartRunRequest(study="plain", run=pb.RunSpec(name="r")))
        points = [pb.Point(step=s, value=curve(s, 1.0)) for s in range(10, 101, 10)]
        stub.ReportMetrics(pb.ReportMetricsRequest(study="plain", run="r", points=points))


def test_the_dashboard_is_off_unless_a_port_is_given(tmp_path):
    server = start_live_server(tmp_path / "s.db")
    try:
        assert server.running.http is None
    finally:
        server.stop()


def test_a_busy_port_is_an_error_that_names_the_setting(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StartupError, match="--http-port"):
            start_live_server(tmp_path / "s.db", http_port=port)
