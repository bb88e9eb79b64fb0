"""`forecaster train`: the learned forecasters (gbm, sequence, ensemble) from a corpus."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train the learned forecasters (gbm, sequence, ensemble) on a corpus",
        description="Splits each source's tasks into train, calib and test (a task is never in "
        "two), trains gbm on train, pre-trains sequence on synthetic curves and fine-tunes it "
        "on train, stacks and calibrates the ensemble on calib, scores all on test, and writes "
        "OUT/<name>/ (meta.json with version, corpus fingerprint and held-out metrics). Serve "
        "them with FORECASTER_MODELS_DIR=OUT forecaster serve.",
    )
    options.add_corpus(parser)
    parser.add_argument("--out", required=True, help="folder for the artifacts")
    options.add_sources(parser)
    parser.add_argument(
        "--holdout-source",
        action="append",
        metavar="SOURCE",
        help="leave this source out of everything training reads (repeatable or "
        "comma-separated): what `forecaster eval --protocol loso` scores it with",
    )
    options.add_max_runs_per_task(parser, default=60, help="runs sampled per task")
    parser.add_argument("--synthetic-tasks", type=int, default=150, help="tasks of the prior (x20)")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--gbm-rounds", type=int, default=300)
    options.add_seed(parser)
    options.add_workers(parser)
    parser.add_argument(
        "--example-index",
        action="store_true",
        help="also write OUT/training_examples.parquet: the run behind every example",
    )
    options.add_json(parser, help="print the held-out metrics as JSON")
    options.add_no_progress(parser, help="no progress on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from forecaster.training import format_metrics, train_all

    metrics = train_all(
        args.corpus,
        args.out,
        source_names=options.csv(args.sources),
        holdout_sources=options.csv_all(args.holdout_source),
        max_runs_per_task=args.max_runs_per_task,
        synthetic_tasks=args.synthetic_tasks,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        gbm_rounds=args.gbm_rounds,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        example_index=args.example_index,
    )
    if args.json:
        print(json.dumps({"heldout_metrics": metrics}, indent=1))
    else:
        print(format_metrics(metrics))
    return 0
