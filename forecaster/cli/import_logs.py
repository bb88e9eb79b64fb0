"""`forecaster import`: your own logs (long CSV/Parquet, TensorBoard, W&B, MLflow) as a corpus."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "import",
        help="turn your own logs (long CSV/Parquet, TensorBoard, W&B, MLflow) into a corpus",
        description="Reads PATH as KIND and writes OUT/runs.parquet and OUT/points.parquet in "
        "the corpus schema, ready for `forecaster eval`, `replay` and `train` (pass the folder "
        "holding OUT as --corpus). long: columns run_id, step, value [, lr, wall_time, task, "
        "metric, direction, max_step, target]. tensorboard: event files, one run per folder. "
        "wandb: run-history CSV/JSON exports. mlflow: an mlruns/ file store.",
    )
    parser.add_argument("kind", choices=["long", "tensorboard", "wandb", "mlflow"])
    parser.add_argument("path", help="the file or folder to read")
    parser.add_argument(
        "--out", required=True, help="the source folder to write (its name is the source)"
    )
    parser.add_argument("--metric", help="the metric to import (default: a validation loss)")
    parser.add_argument("--direction", choices=["min", "max"], help="default: from the metric name")
    parser.add_argument("--task", help="the task of every run (default: from the layout)")
    parser.add_argument("--max-step", type=int, help="the budget of every run, when known")
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forecaster.corpus.importers import ImportOptions, import_logs

    import_options = ImportOptions(
        metric=args.metric, direction=args.direction, task=args.task, max_step=args.max_step
    )
    out, n = import_logs(
        args.kind, args.path, args.out, import_options, progress=not args.no_progress
    )
    print(f"wrote {n} runs to {out} (runs.parquet, points.parquet)")
    return 0
