"""What the importers share: the options, choosing the metric and the lr, and the error for a
PATH of another kind."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from forecaster.errors import InvalidArgumentError

# An importer's progress bar: wraps the items it walks through (files, runs).
Progress = Callable[[Iterable[Any]], Any]

_MAX_WORDS = ("acc", "auc", "f1", "bleu", "rouge", "score", "precision", "recall", "map", "iou")
_LR_NAMES = re.compile(r"(^|[/_.\-])(lr|learning_rate|learning-rate)($|[/_.\-\d])", re.I)


@dataclass(frozen=True)
class ImportOptions:
    """What a user can tell an importer."""

    metric: str | None = None  # which metric becomes the curve (default: see choose_metric)
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


def lr_at(
    steps: npt.NDArray[np.int64],
    lr_steps: npt.NDArray[np.int64],
    lr_values: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The lr in force at each metric step: the last one logged at or before it (NaN before
    the first). lr_steps are sorted, one value each."""
    pos = np.searchsorted(lr_steps, steps, side="right") - 1
    return np.where(pos >= 0, lr_values[np.maximum(pos, 0)], np.nan)


def wrong_kind(path: Path, expected: str, detail: str) -> InvalidArgumentError:
    """The error for a PATH that is not an `expected` log, naming the kind it looks like."""
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
