"""Deterministic splits of a corpus by task: the runs of one task are related (one study, one
dataset), so a task is wholly in train, calib or test, never in two.

Per source, tasks are ordered by a seeded hash of their name; the first 20% (at least one, when
the source has three tasks or more) are test, the next 20% calib, the rest train. The split of
a task depends only on the seed and its source's task names, so it is the same on every
machine, in every process, and for every model (a seeded hash, not scikit-learn's
`GroupShuffleSplit`, whose assignment of a task changes when another task is added).

`leave_one_source_out` gives the folds of the leave-one-source-out protocol
(evaluation/loso.py): each source scored by models that never saw any of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from forecaster.errors import InvalidArgumentError
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


def leave_one_source_out(source_names: Iterable[str]) -> list[tuple[list[str], str]]:
    """(the sources to train on, the one held out) for each source, in name order: the folds
    of the leave-one-source-out protocol (scikit-learn's `LeaveOneGroupOut` over sources).

    A source is a team's own set of studies (its metrics, schedules, logging habits), so a
    figure measured on a source that no learned, stacked or calibrated piece saw is what a
    new team should expect; task-level splits inside a source cannot say that."""
    import numpy as np
    from sklearn.model_selection import LeaveOneGroupOut

    names = sorted(set(source_names))
    if len(names) < 2:
        raise InvalidArgumentError(
            f"leave-one-source-out needs at least 2 sources; the corpus has {names or 'none'}."
        )
    groups = np.asarray(names)
    return [
        ([names[i] for i in train], names[int(held[0])])
        for train, held in LeaveOneGroupOut().split(groups, groups=groups)
    ]
