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

`tensorboard` reads event files with the tensorboard package: `pip install
"forecaster[tensorboard]"`.

Each importer checks that PATH is its kind and says which kind it expected (and, where it can
tell, which kind PATH looks like) when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from forecaster.corpus.importers._common import (
    ImportOptions,
    Progress,
    choose_metric,
    guess_direction,
    lr_name,
    sniff,
)
from forecaster.corpus.importers.long import import_long
from forecaster.corpus.importers.mlflow import import_mlflow
from forecaster.corpus.importers.tensorboard import import_tensorboard, read_event_file
from forecaster.corpus.importers.wandb import import_wandb
from forecaster.corpus.writer import RunRecord, write_source
from forecaster.errors import InvalidArgumentError

__all__ = [
    "KINDS",
    "ImportOptions",
    "choose_metric",
    "guess_direction",
    "import_logs",
    "import_long",
    "import_mlflow",
    "import_tensorboard",
    "import_wandb",
    "lr_name",
    "read_event_file",
    "sniff",
]

KINDS = ("long", "tensorboard", "wandb", "mlflow")

# kind -> importer, as `forecaster import KIND` names it.
_IMPORTERS: dict[str, Callable[[Path, ImportOptions, Progress], Iterator[RunRecord]]] = {
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
