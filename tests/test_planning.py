"""`forecaster law`: fit the schedule law on finished runs' CSVs, forecast new schedules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from forecaster import cli
from forecaster.curves import LrProfile, LrSchedule, ScheduleKind

L0, A, ALPHA, C, TAU = 2.5, 0.8, 0.4, 2.0, 0.02


def write_run(path: Path, schedule: LrSchedule, total: int, with_loss: bool, every: int = 1):
    """A run that follows the annealing law: lr listed every `every` steps, loss every 50
    steps after a 100-step warm-up with no loss logged."""
    profile = LrProfile.from_schedule(schedule, total)
    steps = np.arange(0, total + 1, 10)
    s1 = np.maximum(profile.s1(steps), 1e-12)  # step 0 has no area; its loss is not written
    area = profile.peak * total
    loss = L0 + A * (s1 / area) ** -ALPHA - C * profile.s2(steps, TAU * total) / area
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
    assert "alpha" in printed and "L0" in printed and "wrote" in printed
    with (out / "plan.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "lr", "loss_pred", "loss_q05", "loss_q95"]
    assert len(rows) == len(truth) and rows[0]["loss_pred"] == ""  # step 0: no lr applied yet
    final = rows[-1]
    assert float(final["loss_pred"]) == pytest.approx(truth[6000], rel=0.01)
    assert float(final["loss_q05"]) <= truth[6000] <= float(final["loss_q95"])
    mid = rows[300]  # step 3000, stable phase
    assert float(mid["loss_pred"]) == pytest.approx(truth[3000], rel=0.01)


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
