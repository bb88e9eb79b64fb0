"""Lazy, validated reading of a corpus folder: <corpus>/<source>/{runs,points}.parquet.

Only the columns the schema names are read; extra columns are ignored. Errors name the file,
the run and the column, so a user can fix their export.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.curves import Curve, Direction, LrSchedule, ScheduleKind
from forecaster.errors import InvalidArgumentError
from forecaster.metric_kinds import infer_kind

REQUIRED_RUN_COLUMNS = ("run_id", "task", "direction", "final_step", "final_value")
OPTIONAL_RUN_COLUMNS = ("metric", "step_unit", "max_step", "target", "config")
REQUIRED_POINT_COLUMNS = ("run_id", "step", "value")
OPTIONAL_POINT_COLUMNS = ("lr",)


@dataclass(frozen=True)
class LoggedRun:
    """One run of a corpus: its whole curve, and what the schema says about it."""

    run_id: str
    task: str
    direction: Direction
    final_step: int
    final_value: float
    max_step: int | None
    target: float | None
    steps: np.ndarray
    values: np.ndarray
    lr: np.ndarray | None  # NaN where not logged; None when never logged
    config: dict[str, Any] = field(default_factory=dict)  # the run's hyper-parameters
    metric: str = ""  # the logged metric's name, when the corpus says

    def curve(self, until_step: int | None = None, horizon: int | None = None) -> Curve:
        """The run as it was at until_step (all of it by default). When the run logged its lr,
        the logged lr of the whole run is the planned schedule: a schedule is planned ahead."""
        n = (
            len(self.steps)
            if until_step is None
            else int(np.searchsorted(self.steps, until_step, side="right"))
        )
        schedule = None
        if self.lr is not None:
            known = ~np.isnan(self.lr)
            schedule = LrSchedule(
                ScheduleKind.EXPLICIT,
                steps=tuple(int(s) for s in self.steps[known]),
                values=tuple(float(v) for v in self.lr[known]),
            )
        return Curve(
            self.steps[:n],
            self.values[:n],
            self.direction,
            max_step=horizon if horizon is not None else self.final_step,
            lr=None if self.lr is None else self.lr[:n],
            target=self.target,
            schedule=schedule,
            config=self.config,
            kind=infer_kind(self.metric, self.direction is Direction.MIN),
        )


@dataclass(frozen=True)
class Source:
    """One source folder of a corpus."""

    name: str
    path: Path

    @property
    def runs_file(self) -> Path:
        return self.path / "runs.parquet"

    @property
    def points_file(self) -> Path:
        return self.path / "points.parquet"

    def _runs_scan(self) -> Any:
        """runs.parquet as a lazy frame of the schema's columns, its required ones checked."""
        import polars as pl

        lf = pl.scan_parquet(self.runs_file)
        names = lf.collect_schema().names()
        _require(self.runs_file, names, REQUIRED_RUN_COLUMNS)
        return lf.select([c for c in (*REQUIRED_RUN_COLUMNS, *OPTIONAL_RUN_COLUMNS) if c in names])

    def _check_directions(self, df: Any) -> Any:
        import polars as pl

        bad = df.filter(~pl.col("direction").is_in(["min", "max"]))
        if bad.height:
            raise InvalidArgumentError(
                f"{self.runs_file}: run {bad['run_id'][0]!r}, column 'direction': "
                f"{bad['direction'][0]!r} is neither 'min' nor 'max'."
            )
        return df

    def runs(self) -> Any:
        """runs.parquet as a polars DataFrame (schema columns only), validated."""
        return self._check_directions(self._runs_scan().collect())

    def load(self, run_ids: Sequence[str]) -> list[LoggedRun]:
        """The named runs with their points, in the order given; points must be in step order.

        Reads only the rows of those runs: a range filter on run_id lets polars skip the row
        groups of a file sorted by run_id (as the schema's files are), so loading one study
        of a million-run file does not read the million runs."""
        import polars as pl

        ids = list(run_ids)
        if not ids:
            return []
        wanted = pl.col("run_id").is_between(pl.lit(min(ids)), pl.lit(max(ids))) & pl.col(
            "run_id"
        ).is_in(ids)
        runs = self._check_directions(self._runs_scan().filter(wanted).collect())
        lf = pl.scan_parquet(self.points_file)
        names = lf.collect_schema().names()
        _require(self.points_file, names, REQUIRED_POINT_COLUMNS)
        cols = [c for c in (*REQUIRED_POINT_COLUMNS, *OPTIONAL_POINT_COLUMNS) if c in names]
        points = lf.select(cols).filter(wanted).collect()
        meta = {r["run_id"]: r for r in runs.iter_rows(named=True)}
        columns = _split_points(points)
        out = []
        for run_id in ids:
            if run_id not in meta:
                raise InvalidArgumentError(f"{self.runs_file}: no run {run_id!r}.")
            out.append(self._logged_run(meta[run_id], columns.get(run_id)))
        return out

    def _logged_run(self, row: dict[str, Any], points: _RunPoints | None) -> LoggedRun:
        run_id = row["run_id"]
        if points is None:
            steps, values, lr = np.zeros(0, np.int64), np.zeros(0), None
        else:
            steps, values, lr = points
            if len(steps) > 1 and (np.diff(steps) <= 0).any():
                i = int(np.argmax(np.diff(steps) <= 0))
                raise InvalidArgumentError(
                    f"{self.points_file}: run {run_id!r}, column 'step': points are out of "
                    f"order or repeated (step {steps[i + 1]} after {steps[i]}); sort by "
                    "run_id, step and keep one point per step."
                )
        max_step = row.get("max_step")
        target = row.get("target")
        return LoggedRun(
            run_id=run_id,
            task=str(row["task"]),
            direction=Direction(row["direction"]),
            final_step=int(row["final_step"]),
            final_value=float("nan") if row["final_value"] is None else float(row["final_value"]),
            max_step=None if max_step is None else int(max_step),
            target=None if target is None or not np.isfinite(target) else float(target),
            steps=steps,
            values=values,
            lr=lr,
            config=_config(self.runs_file, run_id, row.get("config")),
            metric=str(row.get("metric") or ""),
        )


# One run's (steps, values, lr or None) as numpy arrays.
_RunPoints = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _split_points(points: Any) -> dict[str, _RunPoints]:
    """A study's points frame cut into runs, in the order each run's points come in the file:
    one conversion of each column to numpy and slices of it, not a polars call per run (which
    cost more than a pow3 fit). A run's lr is None when it never logged one; NaN where it was
    not logged or is not a usable rate (negative, inf)."""
    import polars as pl

    if points.height == 0:
        return {}
    # Stable: each run's points stay in file order (the order check is the caller's).
    points = points.sort("run_id", maintain_order=True)
    run_ids = points["run_id"]
    firsts = run_ids.unique(maintain_order=True).to_list()
    counts = run_ids.unique_counts().to_numpy()
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    bounds[1:] = np.cumsum(counts)
    steps = points["step"].to_numpy().astype(np.int64)
    values = points["value"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    lr_all = None
    logged = np.zeros(len(firsts), dtype=bool)
    if "lr" in points.columns:
        lr_col = points["lr"].cast(pl.Float64)
        known = lr_col.is_not_null().to_numpy()
        logged = np.add.reduceat(known.astype(np.int64), bounds[:-1]) > 0
        lr_all = lr_col.fill_null(float("nan")).to_numpy()
        lr_all = np.where(np.isfinite(lr_all) & (lr_all >= 0), lr_all, np.nan)
    out: dict[str, _RunPoints] = {}
    for k, run_id in enumerate(firsts):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        lr = lr_all[lo:hi] if lr_all is not None and logged[k] else None
        out[run_id] = (steps[lo:hi], values[lo:hi], lr)
    return out


def _config(path: Path, run_id: str, text: str | None) -> dict[str, Any]:
    """The run's config column: a JSON object, or {} when absent."""
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as e:
        raise InvalidArgumentError(
            f"{path}: run {run_id!r}, column 'config': not valid JSON ({e}); write a JSON "
            "object of the run's hyper-parameters, or {}."
        ) from None
    return config if isinstance(config, dict) else {}


def _require(path: Path, names: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in names]
    if missing:
        raise InvalidArgumentError(
            f"{path}: missing required column(s) {', '.join(missing)}; found "
            f"{', '.join(names)}. See datasets/SCHEMA.md for the corpus schema."
        )


def sources(corpus: str | Path, names: Sequence[str] | None = None) -> list[Source]:
    """The source folders of a corpus (those holding runs.parquet and points.parquet)."""
    root = Path(corpus)
    if not root.is_dir():
        raise InvalidArgumentError(f"corpus folder {root} does not exist.")
    if (root / "runs.parquet").exists():  # a single source folder given directly
        found = [Source(root.name, root)]
    else:
        found = [
            Source(p.name, p)
            for p in sorted(root.iterdir())
            if (p / "runs.parquet").exists() and (p / "points.parquet").exists()
        ]
    if names:
        known = {s.name for s in found}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidArgumentError(
                f"no source {', '.join(unknown)} in {root}; found {', '.join(sorted(known))}."
            )
        found = [s for s in found if s.name in names]
    if not found:
        raise InvalidArgumentError(
            f"{root} holds no source folder with runs.parquet and points.parquet "
            "(see datasets/SCHEMA.md)."
        )
    return found
