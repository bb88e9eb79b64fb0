"""`forecaster eval`: forecast accuracy over a corpus of logged runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "eval",
        help="forecast accuracy over a corpus of logged runs (cut each run, forecast its end)",
        description="Cuts each run of a corpus (the schema of datasets/SCHEMA.md) at fractions "
        "of its final logged step, forecasts the value at that step, and reports per source, "
        "model and cutoff: mae, medae, their ratios to the last value, interval coverage, "
        "CRPS and fit time.",
    )
    options.add_corpus(parser)
    options.add_sources(parser)
    parser.add_argument(
        "--models",
        help="comma-separated forecasters (default: last_value, damped_trend, pow3, power_law, "
        "annealing_law); last_value is always scored, as the baseline; gbm, sequence and "
        "ensemble are the learned ones",
    )
    parser.add_argument("--cutoffs", default="0.1,0.2,0.3,0.5", help="fractions of the final step")
    options.add_max_runs_per_task(parser, default=50)
    options.add_seed(parser, help="which runs are sampled per task")
    options.add_workers(parser)
    options.add_models_dir(parser)
    parser.add_argument(
        "--tasks",
        choices=["auto", "heldout", "all"],
        default="auto",
        help="heldout: only tasks the learned models never trained on (auto: when one of "
        "gbm, sequence, ensemble is evaluated)",
    )
    options.add_json(parser)
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from forecaster.evaluation.accuracy import DEFAULT_MODELS, evaluate, format_table

    rows = evaluate(
        args.corpus,
        source_names=options.csv(args.sources),
        model_names=options.csv(args.models) or list(DEFAULT_MODELS),
        cutoffs=[float(c) for c in (options.csv(args.cutoffs) or [])],
        max_runs_per_task=args.max_runs_per_task,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        models_dir=options.models_dir(args.models_dir),
        heldout={"auto": None, "heldout": True, "all": False}[args.tasks],
    )
    if args.json:
        print(json.dumps({"results": rows}, indent=1))
    else:
        print(format_table(rows))
    return 0
