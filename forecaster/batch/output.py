"""The results file of a batch, written as it goes and resumable.

Results are written in row groups as jobs finish (in job order): each group is first a part
file, `RESULTS.parquet.parts/part-<first job>-<last job>.parquet`, put in place atomically (a
kill leaves either the whole part or none of it). When the last job is written, the parts
become the row groups of RESULTS.parquet and the folder goes. `--resume` reads the parts back,
checks they were made with the same settings, and starts after the last one: every row
written before a kill is kept, and none is computed twice. A group closes after the job that
brings it to `row_group_rows` rows, so the groups, and the bytes of the file, do not depend on
whether or where the batch was interrupted, nor on the engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecaster.batch.study import QUANTILE_NAMES
from forecaster.errors import InvalidArgumentError

SPEC_FILE = "spec.json"
METADATA_KEY = b"forecaster.batch"
_PART = re.compile(r"part-(\d{7})-(\d{7})\.parquet$")


def schema() -> Any:
    """The columns of a results file (docs: README, section batch)."""
    import pyarrow as pa

    f64, i64, text = pa.float64(), pa.int64(), pa.string()
    columns = [
        ("run_id", text),
        ("source", text),
        ("task", text),
        ("cutoff", f64),
        ("last_step", i64),
        ("last_value", f64),
        ("n_points", i64),
        ("horizon", i64),
        ("direction", text),
        ("target", f64),
        ("model", text),
        ("model_version", pa.int32()),
        ("converged", pa.bool_()),
        *[(name, f64) for name in QUANTILE_NAMES],
        ("mean", f64),
        ("p_reach_target", f64),
        ("notes", text),
        *[(f"steps_to_target_{name}", i64) for name in QUANTILE_NAMES],
        ("path_steps", pa.list_(i64)),
        *[(f"path_{name}", pa.list_(f64)) for name in QUANTILE_NAMES],
        ("action", text),
        ("reason", text),
        ("explanation", text),
        ("policy", text),
        ("stop_votes", pa.int32()),
        ("expected_saved_steps", i64),
        ("probabilities", text),
        ("final_step", i64),
        ("final_value", f64),
        ("curve_steps", pa.list_(i64)),
        ("curve_values", pa.list_(f64)),
    ]
    return pa.schema(columns)


def table_of(rows: list[dict[str, Any]], settings: Mapping[str, Any]) -> Any:
    import pyarrow as pa

    s = schema().with_metadata({METADATA_KEY: json.dumps(settings, sort_keys=True)})
    return pa.Table.from_pylist(rows, schema=s)


def job_table(rows: list[dict[str, Any]]) -> Any:
    """One job's rows as an Arrow table of the results' columns: made where the job ran, so
    the driver, which writes every job's rows, only concatenates (and a worker sends Arrow
    buffers back, not a pickled dict a cell)."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema())


@dataclass
class ResultsWriter:
    """Appends job results to the parts folder of `out`; `finish()` makes the results file."""

    out: Path
    settings: Mapping[str, Any]
    row_group_rows: int
    next_job: int = 0  # the first job not yet written
    rows_written: int = 0
    _tables: list[Any] = field(default_factory=list)  # job_table of each job not yet written
    _pending_rows: int = 0
    _first: int = 0

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    @classmethod
    def open(
        cls, out: Path, settings: Mapping[str, Any], row_group_rows: int, *, resume: bool
    ) -> ResultsWriter:
        """A writer; with resume, one that continues the parts a killed batch left."""
        writer = cls(out, dict(settings), row_group_rows)
        parts = writer.parts
        if parts.exists() and not resume:
            raise InvalidArgumentError(
                f"{parts} holds the results of an unfinished batch: pass --resume to continue "
                "it, or delete the folder to start again."
            )
        if resume and parts.exists():
            made_with = json.loads((parts / SPEC_FILE).read_text())
            if made_with != json.loads(json.dumps(writer.settings, sort_keys=True)):
                changed = sorted(
                    k
                    for k in {*made_with, *writer.settings}
                    if made_with.get(k) != writer.settings.get(k)
                )
                raise InvalidArgumentError(
                    f"{parts} was made with other settings ({', '.join(changed)} differ); run "
                    "with the same ones to resume, or delete the folder to start again."
                )
            for first, last, path in writer.written():
                if first != writer.next_job:
                    raise InvalidArgumentError(
                        f"{parts}: {path.name} does not follow job {writer.next_job - 1}; "
                        "delete the folder to start again."
                    )
                writer.next_job = last + 1
                writer.rows_written += _rows_in(path)
            writer._first = writer.next_job
            return writer
        out.parent.mkdir(parents=True, exist_ok=True)
        parts.mkdir()
        (parts / SPEC_FILE).write_text(json.dumps(writer.settings, sort_keys=True, indent=1))
        return writer

    def written(self) -> list[tuple[int, int, Path]]:
        """(first job, last job, file) of each part on disk, in job order."""
        found = []
        for path in self.parts.iterdir():
            m = _PART.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), path))
        return sorted(found)

    def add(self, index: int, rows: Any) -> None:
        """The rows of job `index` (jobs come in order): its job_table, or its row dicts."""
        if index != self.next_job:
            raise ValueError(f"job {index} arrived before job {self.next_job}")
        table = job_table(rows) if isinstance(rows, list) else rows
        self._tables.append(table)
        self._pending_rows += table.num_rows
        self.next_job = index + 1
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        last = self.next_job - 1
        if last < self._first:
            return
        path = self.parts / f"part-{self._first:07d}-{last:07d}.parquet"
        tmp = path.with_suffix(".tmp")
        metadata = {METADATA_KEY: json.dumps(self.settings, sort_keys=True)}
        tables = self._tables or [table_of([], self.settings)]
        table = pa.concat_tables(tables).combine_chunks().replace_schema_metadata(metadata)
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        self.rows_written += self._pending_rows
        self._tables, self._pending_rows = [], 0
        self._first = self.next_job

    def finish(self) -> int:
        """Writes the results file from the parts (one row group each); the number of rows."""
        import pyarrow.parquet as pq

        self._flush()
        tmp = self.out.with_name(self.out.name + ".tmp")
        target_schema = table_of([], self.settings).schema
        with pq.ParquetWriter(tmp, target_schema, compression="zstd") as writer:
            for _, _, path in self.written():
                table = pq.read_table(path).replace_schema_metadata(target_schema.metadata)
                if table.num_rows:
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
        os.replace(tmp, self.out)
        shutil.rmtree(self.parts)
        return self.rows_written


def _rows_in(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)
