"""W&B run-history exports: a CSV with `_step` (or a chart CSV with `<run> - <metric>`
columns, one run each), or JSON/JSONL records; a run is the file or the chart's run."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus.importers._common import (
    ImportOptions,
    Progress,
    choose_metric,
    guess_direction,
    lr_name,
    wrong_kind,
)
from forecaster.corpus.writer import RunRecord
from forecaster.errors import InvalidArgumentError


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
            raise wrong_kind(file, "wandb", f"JSON records with a _step field ({e})") from None
        if isinstance(records, dict):
            records = records.get("history", [records])
        if not records or "_step" not in records[0]:
            raise wrong_kind(file, "wandb", "JSON records with a _step field")
        keys = sorted({k for r in records for k in r})
        rows = {k: [r.get(k) for r in records] for k in keys}
        return pl.DataFrame(rows, strict=False)
    df = pl.read_csv(file, infer_schema_length=10_000)
    return df


def import_wandb(path: Path, options: ImportOptions, progress: Progress) -> Iterator[RunRecord]:
    import polars as pl

    files = (
        sorted([*path.glob("*.csv"), *path.glob("*.json"), *path.glob("*.jsonl")])
        if path.is_dir()
        else [path]
    )
    if not files:
        raise wrong_kind(path, "wandb", "CSV or JSON run-history exports in the folder")
    for file in progress(files):
        try:
            df = _wandb_frames(file)
        except InvalidArgumentError:
            raise
        except Exception as e:  # polars: not a table
            raise wrong_kind(file, "wandb", f"a run-history CSV or JSON export ({e})") from None
        step_col = next(
            (c for c in ("_step", "Step", "step", "trainer/global_step") if c in df.columns), None
        )
        if step_col is None:
            raise wrong_kind(
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
