"""`forecaster calibrate`: the conformal tables of a model folder, from a corpus, without
retraining its learned models (what `forecaster train` does as its last step)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "calibrate",
        help="build the conformal interval tables of a model folder from a corpus",
        description="Cuts the corpus's runs at fractions of their length, forecasts each with "
        "the forecasters `auto` serves (the learned ones loaded from --models-dir), and writes "
        "their scale-free residuals' quantiles by progress and number of points to "
        "MODELS_DIR/calibration/. The service and `forecaster eval` apply them to every "
        "forecast; a folder without them keeps the forecasters' own intervals.",
    )
    options.add_corpus(parser)
    parser.add_argument(
        "--models-dir",
        required=True,
        help="the model folder to calibrate (e.g. forecaster/models/default_artifacts)",
    )
    options.add_sources(parser)
    options.add_max_runs_per_task(parser, default=10, help="runs sampled per task")
    options.add_seed(parser)
    options.add_workers(parser)
    parser.add_argument("--residuals-out", help="also write the residuals (Parquet) here")
    parser.add_argument(
        "--from-residuals",
        help="build the tables from residuals an earlier run wrote (--residuals-out), "
        "without forecasting again",
    )
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forecaster.errors import InvalidArgumentError
    from forecaster.training.calibrate import calibrate

    if not Path(args.models_dir).is_dir():
        raise InvalidArgumentError(
            f"--models-dir {args.models_dir} is not a folder; train one with `forecaster train`."
        )
    if args.from_residuals:
        from forecaster.training.calibrate import rebuild

        collected = {"max_runs_per_task": args.max_runs_per_task, "seed": args.seed,
                     "split_seed": 0, "from_residuals": True}  # fmt: skip
        folder = rebuild(args.corpus, args.models_dir, args.from_residuals, collected)
        print(f"wrote {folder}")
        return 0
    folder = calibrate(
        args.corpus,
        args.models_dir,
        source_names=options.csv(args.sources),
        max_runs_per_task=args.max_runs_per_task,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        residuals_out=args.residuals_out,
    )
    print(f"wrote {folder}")
    return 0
