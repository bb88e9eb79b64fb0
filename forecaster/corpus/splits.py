"""Deterministic splits of a corpus by task: the runs of one task are related (one study, one
dataset), so a task is wholly in train, calib or test, never in two.

Per source, tasks are ordered by a seeded hash of their name; the first 20% (at least one, when
the source has three tasks or more) are test, the next 20% calib, the rest train. The split of
a task depends only on the seed and its source's task names, so it is the same on every
machine, in every process, and for every model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from forecaster.hashing import digest

Part = Literal["train", "calib", "test"]


def _key(seed: int, source: str, task: str) -> str:
    return digest(f"{seed}/{source}/{task}")


def split_tasks(
    source: str,
    tasks: Iterable[str],
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    calib_fraction: float = 0.2,
) -> dict[str, Part]:
    """task -> "train" | "calib" | "test" for the tasks of one source."""
    names = sorted(set(tasks), key=lambda t: _key(seed, source, t))
    n = len(names)
    if n >= 3:
        n_test = max(1, math.floor(test_fraction * n + 0.5))
        n_calib = max(1, math.floor(calib_fraction * n + 0.5))
    else:  # too few to hold any out: all train (a source of one task cannot be split by task)
        n_test = n_calib = 0
    out: dict[str, Part] = {}
    for i, task in enumerate(names):
        out[task] = "test" if i < n_test else "calib" if i < n_test + n_calib else "train"
    return out


def task_key(source: str, task: str) -> str:
    """How a task is named across sources, e.g. in an artifact's list of training tasks."""
    return f"{source}/{task}"
