"""TensorBoard event files: a file, or a folder searched for `*tfevents*`; a run is the folder
holding event files. The files are read with the tensorboard package (the `tensorboard` extra)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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
from forecaster.errors import FailedPreconditionError

_NOT_EVENTS = "an event file (records starting with brain.Event)"


def _tensorboard() -> tuple[ModuleType, ModuleType, ModuleType]:
    """tensorboard's event-file loader, tensor_util and types_pb2, or the error naming the
    extra that installs them."""
    try:
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.compat.proto import types_pb2
        from tensorboard.util import tensor_util
    except ImportError as e:
        raise FailedPreconditionError(
            f"reading TensorBoard event files needs the tensorboard package ({e}); install it "
            'with `pip install "forecaster[tensorboard]"`.'
        ) from e
    return event_file_loader, tensor_util, types_pb2


def read_event_file(file: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, value, wall_time)] of the scalars in one TensorBoard event file: scalar
    summaries (`simple_value`, as torch's SummaryWriter writes) and one-element float tensor
    summaries (as TF2's `tf.summary.scalar` writes)."""
    from google.protobuf.message import DecodeError

    event_file_loader, tensor_util, types_pb2 = _tensorboard()
    # EventFileLoader turns old-style `simple_value`s into tensors, so one path reads both.
    events = event_file_loader.EventFileLoader(str(file)).Load()
    out: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    try:
        first = next(events, None)
        if first is None or not first.file_version.startswith("brain.Event"):
            raise wrong_kind(file, "tensorboard", _NOT_EVENTS)
        for event in events:
            for value in event.summary.value:
                tensor = value.tensor
                if (
                    not value.tag
                    or not value.HasField("tensor")
                    or tensor.dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)
                ):
                    continue
                array = tensor_util.make_ndarray(tensor)
                if array.size == 1:
                    out[value.tag].append((event.step, float(array.item()), event.wall_time))
    except DecodeError:  # records that are not Event protos
        raise wrong_kind(file, "tensorboard", _NOT_EVENTS) from None
    return out


def import_tensorboard(
    path: Path, options: ImportOptions, progress: Progress
) -> Iterator[RunRecord]:
    _tensorboard()  # fails first when the extra is missing, whatever PATH is
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
            for tag, points in read_event_file(f).items():
                scalars[tag].extend(points)
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
