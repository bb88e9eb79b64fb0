"""Importers: a user's own training logs into the corpus schema (datasets/SCHEMA.md).

| kind          | PATH                                     | one run is                        |
| ------------- | ---------------------------------------- | --------------------------------- |
| `long`        | a CSV or Parquet file (or a folder)      | the rows of one `run_id`          |
| `tensorboard` | an event file, or a folder searched      | the folder holding event files    |
| `wandb`       | a run-history export: CSV or JSON(L)     | the file (or `<run> - metric` col)|
| `mlflow`      | an MLflow file store (`mlruns/`)         | an MLflow run                     |

The long format: one row per point with columns `run_id`, `step`, `value`, and optionally
`lr`, `wall_time`, `task`, `metric`, `direction`, `max_step`, `target`. The other kinds pick
one metric per run (`metric`, or the first name with "loss" in it, preferring validation
ones) and the learning rate from a metric named like "lr" or "learning_rate".

Each importer checks that PATH is its kind and says which kind it expected (and, where it can
tell, which kind PATH looks like) when it is not.
"""

from __future__ import annotations

import json
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus.writer import RunRecord, write_source
from forecaster.errors import InvalidArgumentError

KINDS = ("long", "tensorboard", "wandb", "mlflow")
_MAX_WORDS = ("acc", "auc", "f1", "bleu", "rouge", "score", "precision", "recall", "map", "iou")
_LR_NAMES = re.compile(r"(^|[/_.\-])(lr|learning_rate|learning-rate)($|[/_.\-\d])", re.I)


@dataclass(frozen=True)
class ImportOptions:
    """What a user can tell an importer."""

    metric: str | None = None  # which metric becomes the curve (default: a loss, see above)
    direction: str | None = None  # "min" / "max" (default: from the metric's name)
    task: str | None = None  # the task of every run (default: from the layout)
    max_step: int | None = None  # the budget of every run, when known


def guess_direction(metric: str) -> str:
    """ "max" for accuracy-like names (acc, auc, f1, bleu, ...), "min" otherwise."""
    name = metric.lower()
    return "max" if any(w in name for w in _MAX_WORDS) and "loss" not in name else "min"


def choose_metric(names: Iterable[str], wanted: str | None, where: str) -> str:
    """The metric to import: the one asked for, else a validation loss, else any loss."""
    names = [n for n in names if not _LR_NAMES.search(n)]
    if wanted is not None:
        if wanted not in names:
            raise InvalidArgumentError(
                f"{where}: no metric {wanted!r}; found {', '.join(sorted(names)) or 'none'}."
            )
        return wanted
    losses = [n for n in names if "loss" in n.lower()]
    for n in losses:
        if any(k in n.lower() for k in ("val", "eval", "valid", "test")):
            return n
    if losses:
        return losses[0]
    raise InvalidArgumentError(
        f"{where}: no metric with 'loss' in its name; pass --metric (found "
        f"{', '.join(sorted(names)) or 'none'})."
    )


def lr_name(names: Iterable[str]) -> str | None:
    found = [n for n in names if _LR_NAMES.search(n)]
    return sorted(found, key=len)[0] if found else None


def _wrong_kind(path: Path, expected: str, detail: str) -> InvalidArgumentError:
    seen = sniff(path)
    hint = (
        f"; it looks like {seen!r}: use `forecaster import {seen} {path}`"
        if seen and seen != expected
        else ""
    )
    return InvalidArgumentError(f"{path} is not a {expected!r} log: expected {detail}{hint}.")


def sniff(path: Path) -> str | None:
    """Which kind PATH looks like, or None."""
    path = Path(path)
    if path.is_dir():
        if any(path.rglob("*tfevents*")):
            return "tensorboard"
        if any(path.glob("*/meta.yaml")) or any(path.glob("*/*/metrics")):
            return "mlflow"
        return None
    if "tfevents" in path.name:
        return "tensorboard"
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return None
    if head[:4] == b"PAR1":
        return "long"
    text = head.decode("utf-8", "replace")
    first = text.splitlines()[0] if text.strip() else ""
    if (
        '"_step"' in text
        or first.split(",")[:1] == ["_step"]
        or first.startswith('"Step"')
        or first.startswith("Step,")
    ):
        return "wandb"
    if "run_id" in first and "step" in first:
        return "long"
    return None


# -- long format --------------------------------------------------------------------------


def _long_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.csv"), *path.glob("*.parquet")])
        if not files:
            raise _wrong_kind(path, "long", "CSV or Parquet files in the folder")
        return files
    return [path]


def import_long(
    path: Path, options: ImportOptions, progress: Callable[[Iterable[Any]], Any]
) -> Iterator[RunRecord]:
    import polars as pl

    for file in progress(_long_files(path)):
        try:
            if file.suffix == ".parquet":
                df = pl.read_parquet(file)
            else:
                df = pl.read_csv(file, infer_schema_length=10_000)
        except Exception as e:  # polars raises several types for a file it cannot parse
            raise _wrong_kind(file, "long", f"a CSV or Parquet table ({e})") from None
        missing = [c for c in ("run_id", "step", "value") if c not in df.columns]
        if missing:
            raise _wrong_kind(
                file,
                "long",
                f"columns run_id, step, value (missing {', '.join(missing)}; "
                f"found {', '.join(df.columns)})",
            )
        for col in ("step", "value", "lr", "wall_time", "max_step", "target"):
            if col in df.columns:
                try:
                    df = df.with_columns(pl.col(col).cast(pl.Float64, strict=True))
                except Exception:
                    bad = df.filter(
                        pl.col(col).cast(pl.Float64, strict=False).is_null()
                        & pl.col(col).is_not_null()
                    ).row(0, named=True)
                    raise InvalidArgumentError(
                        f"{file}: run {bad['run_id']!r}, column {col!r}: {bad[col]!r} is not a "
                        "number."
                    ) from None
        for (run_id,), frame in df.group_by("run_id", maintain_order=True):
            yield _long_run(file, str(run_id), frame, options)


def _long_run(file: Path, run_id: str, frame: Any, options: ImportOptions) -> RunRecord:
    steps = frame["step"].to_numpy()
    if np.isnan(steps).any() or (steps < 0).any() or (steps != np.round(steps)).any():
        raise InvalidArgumentError(
            f"{file}: run {run_id!r}, column 'step': steps must be whole numbers >= 0."
        )
    if len(np.unique(steps)) != len(steps):
        dup = steps[np.flatnonzero(np.bincount(np.unique(steps, return_inverse=True)[1]) > 1)[0]]
        raise InvalidArgumentError(
            f"{file}: run {run_id!r}, column 'step': step {int(dup)} appears twice; keep one "
            "point per step."
        )

    def first(col: str, default: Any) -> Any:
        if col in frame.columns and frame[col].null_count() < frame.height:
            return frame[col].drop_nulls()[0]
        return default

    metric = str(first("metric", options.metric or "value"))
    direction = options.direction or str(first("direction", guess_direction(metric)))
    max_step = first("max_step", options.max_step)
    target = first("target", None)
    return RunRecord(
        run_id=run_id,
        task=options.task or str(first("task", file.stem)),
        metric=metric,
        direction=direction,
        steps=steps.astype(np.int64),
        values=frame["value"].fill_null(float("nan")).to_numpy(),
        lr=frame["lr"].to_numpy() if "lr" in frame.columns else None,
        wall_time=frame["wall_time"].to_numpy() if "wall_time" in frame.columns else None,
        max_step=None if max_step is None else int(max_step),
        target=None if target is None else float(target),
    )


# -- TensorBoard --------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; bytes for length-delimited."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _tensor_scalar(buf: bytes) -> float | None:
    dtype = 0
    for field, wire, value in _fields(buf):
        if field == 1:
            dtype = value
        elif field == 5:  # float_val
            return (
                float(struct.unpack("<f", value[:4])[0])
                if wire == 2
                else float(struct.unpack("<f", value)[0])
            )
        elif field == 6:  # double_val
            return float(struct.unpack("<d", value[:8])[0])
        elif field == 4 and value:  # tensor_content
            if dtype == 1 and len(value) == 4:
                return float(struct.unpack("<f", value)[0])
            if dtype == 2 and len(value) == 8:
                return float(struct.unpack("<d", value)[0])
    return None


def read_event_file(file: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, value, wall_time)] of the scalars in one TensorBoard event file."""
    data = file.read_bytes()
    out: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    i, first = 0, True
    while i + 12 <= len(data):
        (size,) = struct.unpack("<Q", data[i : i + 8])
        record = data[i + 12 : i + 12 + size]
        i += 12 + size + 4
        try:
            event = list(_fields(record))
        except (ValueError, IndexError):
            event = []
        if first:
            version = [v for f, _, v in event if f == 3]
            if not version or not bytes(version[0]).startswith(b"brain.Event"):
                raise _wrong_kind(
                    file, "tensorboard", "an event file (records starting with brain.Event)"
                )
            first = False
            continue
        wall, step, summary = 0.0, 0, None
        for f, _, v in event:
            if f == 1:
                wall = struct.unpack("<d", v)[0]
            elif f == 2:
                step = v
            elif f == 5:
                summary = v
        if summary is None:
            continue
        for f, _, value in _fields(summary):
            if f != 1:
                continue
            tag, scalar = None, None
            for vf, vw, vv in _fields(value):
                if vf == 1:
                    tag = bytes(vv).decode()
                elif vf == 2 and vw == 5:
                    scalar = float(struct.unpack("<f", vv)[0])
                elif vf == 8:
                    scalar = _tensor_scalar(vv)
            if tag is not None and scalar is not None:
                out[tag].append((int(step), scalar, float(wall)))
    if first:
        raise _wrong_kind(file, "tensorboard", "an event file (records starting with brain.Event)")
    return out


def import_tensorboard(
    path: Path, options: ImportOptions, progress: Callable[[Iterable[Any]], Any]
) -> Iterator[RunRecord]:
    files = [path] if path.is_file() else sorted(path.rglob("*tfevents*"))
    if not files:
        raise _wrong_kind(path, "tensorboard", "files named *tfevents* under the folder")
    root = path if path.is_dir() else path.parent
    by_run: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_run[f.parent].append(f)
    for run_dir, run_files in progress(sorted(by_run.items())):
        scalars: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
        for f in sorted(run_files):
            for tag, rows in read_event_file(f).items():
                scalars[tag].extend(rows)
        if not scalars:
            continue
        rel = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
        metric = choose_metric(scalars, options.metric, str(run_dir))
        rows = {s: (v, w) for s, v, w in sorted(scalars[metric])}  # a resumed run: last wins
        steps = np.array(sorted(rows), dtype=np.int64)
        lr_tag = lr_name(scalars)
        lr = None
        if lr_tag is not None:
            lr_rows = dict((s, v) for s, v, _ in sorted(scalars[lr_tag]))
            known = np.array(sorted(lr_rows))
            lr_values = np.array([lr_rows[k] for k in known])
            # The lr in force at each metric step: the last one logged at or before it.
            pos = np.searchsorted(known, steps, side="right") - 1
            lr = np.where(pos >= 0, lr_values[np.maximum(pos, 0)], np.nan)
        wall = np.array([rows[s][1] for s in steps])
        yield RunRecord(
            run_id=rel.replace("/", "_") or "run",
            task=options.task or root.name,
            metric=metric,
            direction=options.direction or guess_direction(metric),
            steps=steps,
            values=np.array([rows[s][0] for s in steps]),
            lr=lr,
            wall_time=wall - wall.min() if len(wall) else None,
            max_step=options.max_step,
        )


# -- W&B ----------------------------------------------------------------------------------


def _wandb_frames(file: Path) -> Any:
    import polars as pl

    text = file.read_text()
    if file.suffix in (".json", ".jsonl") or text.lstrip()[:1] in ("[", "{"):
        try:
            records = (
                json.loads(text)
                if text.lstrip()[:1] == "["
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
        except json.JSONDecodeError as e:
            raise _wrong_kind(file, "wandb", f"JSON records with a _step field ({e})") from None
        if isinstance(records, dict):
            records = records.get("history", [records])
        if not records or "_step" not in records[0]:
            raise _wrong_kind(file, "wandb", "JSON records with a _step field")
        keys = sorted({k for r in records for k in r})
        rows = {k: [r.get(k) for r in records] for k in keys}
        return pl.DataFrame(rows, strict=False)
    df = pl.read_csv(file, infer_schema_length=10_000)
    return df


def import_wandb(
    path: Path, options: ImportOptions, progress: Callable[[Iterable[Any]], Any]
) -> Iterator[RunRecord]:
    import polars as pl

    files = (
        sorted([*path.glob("*.csv"), *path.glob("*.json"), *path.glob("*.jsonl")])
        if path.is_dir()
        else [path]
    )
    if not files:
        raise _wrong_kind(path, "wandb", "CSV or JSON run-history exports in the folder")
    for file in progress(files):
        try:
            df = _wandb_frames(file)
        except InvalidArgumentError:
            raise
        except Exception as e:  # polars: not a table
            raise _wrong_kind(file, "wandb", f"a run-history CSV or JSON export ({e})") from None
        step_col = next(
            (c for c in ("_step", "Step", "step", "trainer/global_step") if c in df.columns), None
        )
        if step_col is None:
            raise _wrong_kind(
                file, "wandb", f"a _step or Step column (found {', '.join(df.columns)})"
            )
        cols = [
            c
            for c in df.columns
            if c != step_col and not c.startswith("_") and not c.endswith(("__MIN", "__MAX"))
        ]
        panel = [c for c in cols if " - " in c]
        groups: dict[str, list[str]] = defaultdict(list)
        if panel:  # a chart export: "<run name> - <metric>" per run
            for c in panel:
                run, _, metric = c.rpartition(" - ")
                groups[run].append(metric)
        else:
            groups[file.stem] = cols
        for run, metrics in groups.items():
            metric = choose_metric(metrics, options.metric, str(file))
            col = f"{run} - {metric}" if panel else metric
            lr_col = lr_name(metrics)
            if lr_col is not None and panel:
                lr_col = f"{run} - {lr_col}"
            frame = df.select(
                pl.col(step_col).cast(pl.Float64, strict=False).alias("step"),
                pl.col(col).cast(pl.Float64, strict=False).alias("value"),
                *([pl.col(lr_col).cast(pl.Float64, strict=False).alias("lr")] if lr_col else []),
            ).filter(pl.col("step").is_not_null() & pl.col("value").is_not_null())
            if not frame.height:
                continue
            frame = frame.group_by("step", maintain_order=True).last().sort("step")
            yield RunRecord(
                run_id=run,
                task=options.task or path.stem if path.is_file() else options.task or path.name,
                metric=metric,
                direction=options.direction or guess_direction(metric),
                steps=frame["step"].to_numpy().astype(np.int64),
                values=frame["value"].to_numpy(),
                lr=frame["lr"].fill_null(float("nan")).to_numpy() if lr_col else None,
                max_step=options.max_step,
            )


# -- MLflow -------------------------------------------------------------------------------


def _yaml_value(file: Path, key: str) -> str | None:
    if not file.exists():
        return None
    for line in file.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def import_mlflow(
    path: Path, options: ImportOptions, progress: Callable[[Iterable[Any]], Any]
) -> Iterator[RunRecord]:
    if not path.is_dir():
        raise _wrong_kind(
            path, "mlflow", "an MLflow file store folder (mlruns/<experiment>/<run>/metrics/<name>)"
        )
    runs = sorted(p.parent for p in path.glob("*/*/metrics") if p.is_dir())
    if not runs:
        raise _wrong_kind(path, "mlflow", "mlruns/<experiment>/<run>/metrics/<name> files")
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
            pos = np.searchsorted(lsteps, steps, side="right") - 1
            lr = np.where(pos >= 0, lvalues[np.maximum(pos, 0)], np.nan)
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


def _mlflow_series(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


_IMPORTERS = {
    "long": import_long,
    "tensorboard": import_tensorboard,
    "wandb": import_wandb,
    "mlflow": import_mlflow,
}


def import_logs(
    kind: str,
    path: str | Path,
    out: str | Path,
    options: ImportOptions | None = None,
    progress: bool = True,
) -> tuple[Path, int]:
    """Reads PATH as KIND and writes the source folder OUT; returns (OUT, number of runs)."""
    from tqdm import tqdm

    if kind not in _IMPORTERS:
        raise InvalidArgumentError(
            f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}."
        )
    path = Path(path)
    if not path.exists():
        raise InvalidArgumentError(f"{path} does not exist.")
    if options is not None and options.direction not in (None, "min", "max"):
        raise InvalidArgumentError(f"direction must be 'min' or 'max'; got {options.direction!r}.")

    def bar(items: Iterable[Any]) -> Any:
        return tqdm(
            list(items), desc=f"import {kind}", unit="item", disable=not progress, leave=False
        )

    runs = list(_IMPORTERS[kind](path, options or ImportOptions(), bar))
    written = write_source(out, runs)
    return written, len(runs)
