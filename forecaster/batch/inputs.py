"""What `forecaster batch` reads: a corpus folder (the schema of datasets/SCHEMA.md), or one
file of long-form points (`run_id, step, value[, lr, wall_time]` plus optional run columns).

Everything here is lazy: the driver reads only the run table (one row a run) to plan studies,
and a worker reads the points of one study at a time (a range + membership filter on run_id,
which polars pushes down to the row groups of a sorted Parquet file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus.reader import LoggedRun, Source, sources
from forecaster.curves import Direction
from forecaster.errors import InvalidArgumentError

# Long form: the columns a points file must have, and the run columns it may carry (first
# value per run wins), with the type each must parse as.
LONG_REQUIRED = {"run_id": "string", "step": "integer", "value": "number"}
LONG_OPTIONAL = {
    "lr": "number",
    "wall_time": "number",
    "task": "string",
    "metric": "string",
    "direction": "string",
    "max_step": "integer",
    "target": "number",
    "config": "string",
}
DEFAULT_TASK = "default"


@dataclass(frozen=True)
class StudyPlan:
    """One study to judge: a task of a source, its runs (sorted ids)."""

    source: str
    task: str
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class CorpusInput:
    """A corpus folder (or one source folder)."""

    corpus: str
    source_names: tuple[str, ...] = ()

    def sources(self) -> list[Source]:
        return sources(self.corpus, list(self.source_names) or None)

    def plan(self) -> Iterator[StudyPlan]:
        for source in self.sources():
            runs = source.runs().select("run_id", "task").sort("task", "run_id")
            for (task,), frame in runs.group_by("task", maintain_order=True):
                yield StudyPlan(source.name, str(task), tuple(frame["run_id"].to_list()))

    def load(self, source: str, run_ids: Sequence[str]) -> list[LoggedRun]:
        (found,) = [s for s in self.sources() if s.name == source]
        return found.load(run_ids)

    def describe(self) -> str:
        return f"corpus {self.corpus}" + (
            f" (sources {','.join(self.source_names)})" if self.source_names else ""
        )


@dataclass(frozen=True)
class PointsInput:
    """One Parquet file of long-form points (a CSV is converted to Parquet first: see
    `points_input`)."""

    path: str
    shown_as: str  # the file the user named, for errors and the plan
    source: str = "points"

    def _scan(self) -> Any:
        import polars as pl

        return pl.scan_parquet(self.path)

    def plan(self) -> Iterator[StudyPlan]:
        import polars as pl

        lf = self._scan()
        names = lf.collect_schema().names()
        task = pl.col("task").cast(pl.String) if "task" in names else pl.lit(DEFAULT_TASK)
        runs = (
            lf.select(pl.col("run_id").cast(pl.String), task.alias("task"))
            .group_by("run_id")
            .agg(pl.col("task").drop_nulls().first().fill_null(DEFAULT_TASK))
            .sort("task", "run_id")
            .collect()
        )
        for (name,), frame in runs.group_by("task", maintain_order=True):
            yield StudyPlan(self.source, str(name), tuple(frame["run_id"].to_list()))

    def load(self, source: str, run_ids: Sequence[str]) -> list[LoggedRun]:
        import polars as pl

        ids = list(run_ids)
        if not ids:
            return []
        lf = self._scan()
        names = lf.collect_schema().names()
        wanted = pl.col("run_id").is_between(pl.lit(min(ids)), pl.lit(max(ids))) & pl.col(
            "run_id"
        ).is_in(ids)
        frame = lf.filter(wanted).sort("run_id", "step").collect()
        by_run = {
            key[0]: f
            for key, f in frame.partition_by("run_id", as_dict=True, maintain_order=True).items()
        }
        return [self._logged_run(run_id, by_run.get(run_id), names) for run_id in ids]

    def _logged_run(self, run_id: str, frame: Any, names: Sequence[str]) -> LoggedRun:
        if frame is None or frame.height == 0:
            raise InvalidArgumentError(f"{self.shown_as}: no points for run {run_id!r}.")
        steps = frame["step"].cast(int).to_numpy().astype(np.int64)
        values = frame["value"].cast(float).fill_null(float("nan")).to_numpy()
        if len(steps) > 1 and (np.diff(steps) <= 0).any():
            i = int(np.argmax(np.diff(steps) <= 0))
            raise InvalidArgumentError(
                f"{self.shown_as}: run {run_id!r}, column 'step': step {steps[i]} appears "
                "twice; keep one point per step."
            )
        lr = None
        if "lr" in names and frame["lr"].null_count() < frame.height:
            lr = frame["lr"].cast(float).fill_null(float("nan")).to_numpy()
            lr = np.where(np.isfinite(lr) & (lr >= 0), lr, np.nan)

        def first(column: str) -> Any:
            if column not in names:
                return None
            known = frame[column].drop_nulls()
            return known[0] if len(known) else None

        direction = str(first("direction") or "min")
        if direction not in ("min", "max"):
            raise InvalidArgumentError(
                f"{self.shown_as}: run {run_id!r}, column 'direction': {direction!r} is "
                "neither 'min' nor 'max'."
            )
        max_step, target, config = first("max_step"), first("target"), first("config")
        return LoggedRun(
            run_id=run_id,
            task=str(first("task") or DEFAULT_TASK),
            direction=Direction(direction),
            final_step=int(steps[-1]),
            final_value=float(values[-1]),
            max_step=None if max_step is None else int(max_step),
            target=None if target is None or not np.isfinite(target) else float(target),
            steps=steps,
            values=values,
            lr=lr,
            config=_config(self.shown_as, run_id, config),
        )

    def describe(self) -> str:
        return f"points {self.shown_as}"


BatchInput = CorpusInput | PointsInput


def _config(path: str, run_id: str, text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        config = json.loads(str(text))
    except ValueError as e:
        raise InvalidArgumentError(
            f"{path}: run {run_id!r}, column 'config': not valid JSON ({e}); write a JSON "
            "object of the run's hyper-parameters, or leave it empty."
        ) from None
    return config if isinstance(config, dict) else {}


def points_input(path: str | Path, work_dir: Path) -> PointsInput:
    """The long-form points file at path, checked: a missing column, or a value that does not
    parse as its column's type, is one error naming the column (and the first bad row). A CSV
    is streamed into work_dir/points.parquet first, so the workers read row groups."""
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"{p}: no such file (expected a Parquet or CSV of points).")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        lf = pl.scan_csv(p, infer_schema=False)  # every column as text: checked below
    elif suffix in (".parquet", ".pq"):
        lf = pl.scan_parquet(p)
    else:
        raise InvalidArgumentError(f"{p}: expected a .parquet or .csv file of points.")
    names = lf.collect_schema().names()
    missing = [c for c in LONG_REQUIRED if c not in names]
    if missing:
        raise InvalidArgumentError(
            f"{p}: missing column(s) {', '.join(missing)}; a points file has run_id, step, "
            f"value and optionally {', '.join(LONG_OPTIONAL)}; found {', '.join(names)}."
        )
    columns = {**LONG_REQUIRED, **{k: v for k, v in LONG_OPTIONAL.items() if k in names}}
    casts = {name: _cast(pl.col(name), kind) for name, kind in columns.items()}
    for name, cast in casts.items():
        _check_column(p, lf, name, cast, columns[name], header=suffix == ".csv")
    typed = lf.select([cast.alias(name) for name, cast in casts.items()])
    if suffix == ".csv":
        work_dir.mkdir(parents=True, exist_ok=True)
        target = work_dir / "points.parquet"
        typed.sink_parquet(target, row_group_size=100_000)
        return PointsInput(str(target), str(p))
    return PointsInput(str(p), str(p))


def _cast(column: Any, kind: str) -> Any:
    import polars as pl

    if kind == "string":
        return column.cast(pl.String)
    if kind == "integer":
        return column.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    return column.cast(pl.Float64, strict=False)


def _check_column(p: Path, lf: Any, name: str, cast: Any, kind: str, *, header: bool) -> None:
    """InvalidArgumentError naming the column and its first value that is not a kind."""
    import polars as pl

    if kind == "string":
        return
    raw = pl.col(name)
    bad_rows = (
        lf.with_row_index("_row")
        .filter(raw.is_not_null() & (raw.cast(pl.String) != "") & cast.is_null())
        .select("_row", raw.cast(pl.String).alias("_raw"))
        .head(1)
        .collect()
    )
    if bad_rows.height:
        row, text = int(bad_rows["_row"][0]), bad_rows["_raw"][0]
        where = f"line {row + 2}" if header else f"row {row}"
        raise InvalidArgumentError(
            f"{p}, {where}, column {name!r}: {text!r} is not {'an' if kind == 'integer' else 'a'} "
            f"{kind}; fix the value or drop the column."
        )
