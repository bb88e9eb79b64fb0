"""forecaster report in a real browser, forecaster plot against a real service, and the
drawing module they share."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from forecaster.batch import CorpusInput, JudgeSpec, LocalEngine, run_batch
from forecaster.cli import main
from forecaster.reporting import png as png_backend
from forecaster.reporting import svg
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.browser import dump_dom, is_blank, screenshot

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "results.parquet"
    run_batch(CorpusInput(str(SAMPLE), ("lcbench", "lr_scheduling_llm")), out,
              JudgeSpec(model="pow3", cutoffs=(0.2, 0.5)), engine=LocalEngine(1),
              progress=False)  # fmt: skip
    return out


def test_report_opens_in_chromium_with_its_charts_and_savings(results, tmp_path):
    html = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(html)]) == 0
    text = html.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # fetches nothing
    assert "https://" not in text and "<script" not in text
    dom = dump_dom(html.as_uri())
    df = pl.read_parquet(results)
    studies = df.select("source", "task").unique().height
    assert dom.count("<svg") >= min(studies, 24)
    assert dom.count("<polygon") >= 2  # the fans' bands
    stopped = df.filter(pl.col("action") == "stop")["run_id"].n_unique()
    assert re.search(rf"These <b>{stopped:,}</b> runs of {df['run_id'].n_unique():,}", dom)
    assert "Savings per study" in dom and "Worst forecasts" in dom
    png = screenshot(html.as_uri(), tmp_path / "report.png")
    assert not is_blank(png)


def test_report_png_inlines_images(results, tmp_path):
    html = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(html), "--png", "--max-studies", "2"]) == 0
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 2 and "<svg" not in text


def test_report_of_a_file_that_is_not_results_is_one_line(tmp_path, capsys):
    other = tmp_path / "x.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(other)
    assert main(["report", str(other), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing column(s) run_id" in err


def test_fan_chart_draws_bands_median_budget_and_marks():
    fan = svg.Fan((10, 15, 20), (1.0, 0.9, 0.8), (1.1, 1.0, 0.9), (1.2, 1.1, 1.0),
                  (1.3, 1.2, 1.1), (1.4, 1.3, 1.2))  # fmt: skip
    chart = svg.fan_chart("run a", [svg.Series("a", (1, 5, 10), (2.0, 1.5, 1.2))], [fan],
                          budget=20, stops=[(10, 1.2)], cut_at=[10])  # fmt: skip
    text = svg.render(chart)
    assert text.startswith("<svg") and text.endswith("</svg>")
    assert text.count("<polygon") == 2  # 5-95 and 25-75
    assert 'stroke-dasharray="5,3"' in text  # the median
    assert ">budget</text>" in text and "<circle" in text  # budget line, forecast point
    assert "NaN" not in text and "nan" not in text


def test_chart_survives_nan_and_huge_values():
    line = svg.Line((1, 2, 3, 4), (1.0, float("nan"), float("inf"), 0.5))
    text = svg.render(svg.Chart("diverged", lines=[line], y_scale="symlog"))
    assert "<path" in text and "nan" not in text.lower().replace("nanogpt", "")


def test_every_element_draws_in_svg_and_png(tmp_path):
    """The elements the dashboard adds (labelled horizontal rules, labelled marks, a fixed log
    step range, a schedule strip of a line and dots) draw in both backends."""
    fan = svg.Fan((100, 500, 1000), (1.0, 0.9, 0.8), (1.1, 1.0, 0.9), (1.2, 1.1, 1.0),
                  (1.3, 1.2, 1.1), (1.4, 1.3, 1.2), run="a")  # fmt: skip
    chart = svg.Chart(
        x_label="step", y_label="loss", x_scale="log", x_range=(10, 1000),
        lines=[svg.Line((10, 50, 100), (2.0, 1.5, 1.2), label="a", kind="curve", run="a")],
        fans=[fan], marks=[svg.Mark(100, 1.2, "a: stopped: diverged", kind="stop-mark")],
        rules=[svg.Rule(1.25, vertical=False, label="incumbent 1.25", kind="incumbent")],
    )  # fmt: skip
    text = svg.render(chart)
    assert '<path class="curve" data-run="a"' in text and '<g class="fan" data-run="a">' in text
    assert 'class="fan-90"' in text and 'class="fan-50"' in text and 'class="incumbent"' in text
    assert ">incumbent 1.25</text>" in text and ">a: stopped: diverged</text>" in text
    assert ">1k</text>" in text  # log ticks at powers of ten, in short numbers
    lr = svg.strip(chart, [svg.Line((10, 1000), (1e-3, 1e-5), kind="schedule"),
                           svg.Line((10, 20, 40), (1e-3, 9e-4, 8e-4), width=0, markers=True,
                                    kind="observed-lr")], y_label="lr")  # fmt: skip
    assert svg.x_range_of(lr) == (10, 1000) and lr.x_scale == "log"
    assert svg.render(lr).count('class="observed-lr"') == 3
    for name, drawn in (("chart.png", chart), ("strip.png", lr)):
        out = png_backend.save(drawn, tmp_path / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not is_blank(out)


def test_plot_draws_a_live_run_from_the_service(live_server, tmp_path):
    import grpc

    stub = pb_grpc.CurveServiceStub(grpc.insecure_channel(live_server.address))
    stub.CreateStudy(pb.CreateStudyRequest(study=pb.StudySpec(
        name="sweep", metric="val_loss", direction=pb.DIRECTION_MINIMIZE, max_step=2000,
        forecaster="pow3")))  # fmt: skip
    stub.StartRun(pb.StartRunRequest(study="sweep", run=pb.RunSpec(name="r1")))
    points = [pb.Point(step=s, value=0.3 + 2.0 * s**-0.4) for s in range(10, 510, 10)]
    stub.ReportMetrics(pb.ReportMetricsRequest(study="sweep", run="r1", points=points))
    out = tmp_path / "r1.svg"
    assert main(["plot", "--study", "sweep", "--run", "r1", "--address", live_server.address,
                 "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text()
    assert text.count("<polygon") == 2 and ">budget</text>" in text and "pow3" in text
    png = tmp_path / "r1.png"
    assert main(["plot", "--study", "sweep", "--run", "r1", "--address", live_server.address,
                 "--out", str(png)]) == 0  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not is_blank(png)


def test_plot_of_an_unknown_run_is_one_line(live_server, tmp_path, capsys):
    assert main(["plot", "--study", "nope", "--run", "r", "--address", live_server.address,
                 "--out", str(tmp_path / "x.svg")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NOT_FOUND" in err
