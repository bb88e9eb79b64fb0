"""MLflow file stores (`mlruns/<experiment>/<run>/metrics/<name>`): a run is an MLflow run,
its experiment the task and its params the config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from forecaster.corpus.importers._common import (
    ImportOptions,
    Progress,
    choose_metric,
    guess_direction,
    lr_at,
    lr_name,
    wrong_kind,
)
from forecaster.corpus.writer import RunRecord
from forecaster.errors import InvalidArgumentError


def _yaml_value(file: Path, key: str) -> str | None:
    if not file.exists():
        return None
    for line in file.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def import_mlflow(path: Path, options: ImportOptions, progress: Progress) -> Iterator[RunRecord]:
    if not path.is_dir():
        raise wrong_kind(
            path, "mlflow", "an MLflow file store folder (mlruns/<experiment>/<run>/metrics/<name>)"
        )
    runs = sorted(p.parent for p in path.glob("*/*/metrics") if p.is_dir())
    if not runs:
        raise wrong_kind(path, "mlflow", "mlruns/<experiment>/<run>/metrics/<name> files")
    for run_dir in progress(runs):
        metrics_dir = run_dir / "metrics"
        series = {
            p.relative_to(metrics_dir).as_posix(): p for p in metrics_dir.rglob("*") if p.is_file()
        }
        if not series:
            continue
        metric = choose_metric(series, options.metric, str(run_dir))
        steps, values, wall = _mlflow_series(series[metric])
        lr_key = lr_name(series)
        lr = None
        if lr_key is not None:
            lsteps, lvalues, _ = _mlflow_series(series[lr_key])
            lr = lr_at(steps, lsteps, lvalues)
        experiment = _yaml_value(run_dir.parent / "meta.yaml", "name") or run_dir.parent.name
        params = (
            {p.name: p.read_text().strip() for p in (run_dir / "params").glob("*")}
            if (run_dir / "params").is_dir()
            else {}
        )
        name = _yaml_value(run_dir / "meta.yaml", "run_name") or run_dir.name
        yield RunRecord(
            run_id=f"{experiment}/{name}",
            task=options.task or experiment,
            metric=metric,
            direction=options.direction or guess_direction(metric),
            steps=steps,
            values=values,
            lr=lr,
            wall_time=wall - wall.min() if len(wall) else None,
            max_step=options.max_step,
            config=params,
        )


def _mlflow_series(
    file: Path,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(steps, values, wall times in s) of one metric file, one point per step."""
    rows: dict[int, tuple[float, float]] = {}
    for n, line in enumerate(file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise InvalidArgumentError(
                f"{file}, line {n}: expected 'timestamp value step'; got {line!r}."
            )
        try:
            stamp, value = float(parts[0]), float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else n - 1
        except ValueError:
            raise InvalidArgumentError(
                f"{file}, line {n}: expected 'timestamp value step' numbers; got {line!r}."
            ) from None
        rows[step] = (value, stamp / 1000.0)  # a re-logged step: the last one wins
    steps = np.array(sorted(rows), dtype=np.int64)
    return (steps, np.array([rows[s][0] for s in steps]), np.array([rows[s][1] for s in steps]))
