"""`forecaster law`: fit the schedule law on finished runs' CSVs, forecast new schedules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from forecaster import cli
from forecaster.curves import LrProfile, LrSchedule, ScheduleKind

L0, A, ALPHA, C, TAU = 2.5, 0.3, 0.4, 0.8, 300.0  # absolute units: lr as given, tau in steps


def write_run(path: Path, schedule: LrSchedule, total: int, with_loss: bool, every: int = 1):
    """A run that follows the annealing law: lr listed every `every` steps, loss every 50
    steps after a 100-step warm-up with no loss logged."""
    profile = LrProfile.from_schedule(schedule, total)
    steps = np.arange(0, total + 1, 10)
    s1 = np.maximum(profile.s1(steps), 1e-12)  # step 0 has no area; its loss is not written
    loss = L0 + A * s1**-ALPHA - C * profile.s2(steps, TAU)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "lr", "loss"] if with_loss else ["step", "lr"])
        for i, s in enumerate(steps):
            lr = f"{schedule.lr_at([s])[0]:.6g}" if i % every == 0 else ""
            row = [int(s), lr]
            if with_loss:
                row.append(f"{loss[i]:.6f}" if s >= 100 and s % 50 == 0 else "")
            w.writerow(row)
    return dict(zip(steps.tolist(), loss.tolist(), strict=True))


def wsd(total: int, fraction: float) -> LrSchedule:
    return LrSchedule(ScheduleKind.WSD, peak_lr=3e-4, warmup_steps=100, total_steps=total,
                      decay_fraction=fraction)  # fmt: skip


def test_plan_a_schedule_from_a_few_finished_runs(tmp_path, capsys):
    train = []
    for i, (total, frac) in enumerate([(3000, 0.2), (5000, 0.1), (4000, 0.3)]):
        path = tmp_path / f"run{i}.csv"
        write_run(path, wsd(total, frac), total, with_loss=True, every=3)  # lr at some steps
        train.append(str(path))
    truth = write_run(tmp_path / "plan.csv", wsd(6000, 0.25), 6000, with_loss=False)
    out = tmp_path / "out"
    code = cli.main(["law", "--train", *train, "--predict", str(tmp_path / "plan.csv"),
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and "L0" in printed and "(+/-" in printed and "wrote" in printed
    with (out / "plan.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "lr", "loss_pred", "loss_q05", "loss_q95"]
    assert len(rows) == len(truth) and rows[0]["loss_pred"] == ""  # step 0: no lr applied yet
    final = rows[-1]
    assert float(final["loss_pred"]) == pytest.approx(truth[6000], rel=0.002)
    assert float(final["loss_q05"]) <= truth[6000] <= float(final["loss_q95"])
    mid = rows[300]  # step 3000, stable phase
    assert float(mid["loss_pred"]) == pytest.approx(truth[3000], rel=0.002)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("step,loss\n1,2.0\n", "line 1: missing column(s) lr"),
        ("step,lr,loss\n1,0.1,2.0\n2,abc,1.9\n", "line 3, column lr: 'abc' is not a number"),
        ("step,lr,loss\n5,0.1,2.0\n3,0.1,1.9\n", "line 3, column step: 3 after 5"),
        ("step,lr,loss\n1.5,0.1,2.0\n", "line 2, column step: '1.5' is not an integer"),
        ("step,lr,loss\n1,0.1\n", "line 2: 2 fields but the header has 3"),
        ("", "the file is empty"),
    ],
)
def test_a_malformed_csv_names_file_line_and_column(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    good = tmp_path / "plan.csv"
    write_run(good, wsd(1000, 0.2), 1000, with_loss=False)
    code = cli.main(["law", "--train", str(bad), "--predict", str(good), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and message in err


def _train_files(tmp_path: Path) -> list[str]:
    train = []
    for i, (total, frac) in enumerate([(3000, 0.2), (5000, 0.1), (4000, 0.3)]):
        path = tmp_path / f"run{i}.csv"
        write_run(path, wsd(total, frac), total, with_loss=True)
        train.append(str(path))
    return train


def test_compare_ranks_candidate_schedules_in_the_true_order(tmp_path, capsys):
    from forecaster.curves import LrProfile

    candidates = {
        "wsd:total=9000,peak=3e-4,warmup=100,decay=0.1": wsd(9000, 0.1),
        "wsd:total=9000,peak=3e-4,warmup=100,decay=0.3,shape=sqrt": LrSchedule(
            ScheduleKind.WSD, peak_lr=3e-4, warmup_steps=100, total_steps=9000,
            decay_fraction=0.3, decay_shape="sqrt"),
        "cosine:total=9000,peak=3e-4,warmup=100": LrSchedule(
            ScheduleKind.COSINE, peak_lr=3e-4, warmup_steps=100, total_steps=9000),
        "constant:total=9000,peak=3e-4,warmup=100": LrSchedule(
            ScheduleKind.CONSTANT, peak_lr=3e-4, warmup_steps=100),
    }  # fmt: skip
    truth = {}
    for spec, schedule in candidates.items():
        profile = LrProfile.from_schedule(schedule, 9000)
        truth[spec] = L0 + A * profile.s1([9000])[0] ** -ALPHA - C * profile.s2([9000], TAU)[0]
    code = cli.main(["law", "--train", *_train_files(tmp_path), "--predict", *candidates,
                     "--compare"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("rank") :].splitlines()[1:]
    ranked = [line.split()[-1] for line in table]
    expected = sorted(truth, key=truth.get)
    safe = ["".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in s) for s in expected]
    assert ranked == safe
    # Each line: the final loss with its 5-95% interval around the truth.
    for line, spec in zip(table, expected, strict=True):
        med, lo, hi = (float(x.strip("[],")) for x in line.split()[1:4])
        assert lo <= truth[spec] <= hi and med == pytest.approx(truth[spec], rel=0.003)


def test_plot_draws_the_fits_the_forecasts_and_the_schedules(tmp_path, capsys):
    from tests.browser import is_blank

    png = tmp_path / "law.png"
    code = cli.main(["law", "--train", *_train_files(tmp_path), "--law", "multi_power_law",
                     "--predict", "cosine:total=8000,peak=3e-4,warmup=100", "--plot",
                     str(png)])  # fmt: skip
    assert code == 0 and png.stat().st_size > 10_000 and not is_blank(png)
    assert f"wrote {png}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("triangle:total=10", "the kinds are wsd, cosine, linear, constant"),
        ("wsd:peak=1e-3,decay=0.2", "needs total=<steps> > 0"),
        ("wsd:total=100,speed=3", "'speed=3' is not key=value with a key among"),
        ("cosine:total=abc", "total='abc' is not a number"),
    ],
)
def test_a_bad_named_schedule_is_one_line_that_says_how(tmp_path, capsys, spec, message):
    code = cli.main(["law", "--train", *_train_files(tmp_path), "--predict", spec, "--compare"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
