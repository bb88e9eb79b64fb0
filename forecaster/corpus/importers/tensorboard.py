"""TensorBoard event files: a file, or a folder searched for `*tfevents*`; a run is the folder
holding event files."""

from __future__ import annotations

import struct
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
    lr_at,
    lr_name,
    wrong_kind,
)
from forecaster.corpus.writer import RunRecord


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
                raise wrong_kind(
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
        raise wrong_kind(file, "tensorboard", "an event file (records starting with brain.Event)")
    return out


def import_tensorboard(
    path: Path, options: ImportOptions, progress: Progress
) -> Iterator[RunRecord]:
    files = [path] if path.is_file() else sorted(path.rglob("*tfevents*"))
    if not files:
        raise wrong_kind(path, "tensorboard", "files named *tfevents* under the folder")
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
            lr = lr_at(steps, known, np.array([lr_rows[k] for k in known]))
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
