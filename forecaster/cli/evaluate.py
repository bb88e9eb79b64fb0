"""`forecaster eval`: forecast accuracy over a corpus of logged runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options
from forecaster.evaluation.loso import LosoTraining

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "eval",
        help="forecast accuracy over a corpus of logged runs (cut each run, forecast its end)",
        description="Cuts each run of a corpus (the schema of datasets/SCHEMA.md) at fractions "
        "of its final logged step, forecasts the value at that step, and reports per source, "
        "model and cutoff: mae, medae, their ratios to the last value, interval coverage, "
        "CRPS and fit time. --protocol loso scores each source with models trained without "
        "it (leave-one-source-out): what a new team's runs should expect.",
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
    parser.add_argument(
        "--protocol",
        choices=["in-distribution", "loso"],
        default="in-distribution",
        help="in-distribution: the --models-dir bank on the tasks it never trained on; "
        "loso: each source scored with a bank trained without that source (trained now, or "
        "reused from --loso-cache); the --loso-* flags size those banks",
    )
    parser.add_argument(
        "--loso-cache",
        help="folder of the banks trained without each source (default: the user cache, "
        "e.g. ~/.cache/forecaster/loso); a bank is reused only for the same training "
        "sources, settings and code",
    )
    loso = LosoTraining()
    for flag, default, what in (
        ("runs-per-task", loso.max_runs_per_task, "runs sampled per task"),
        ("synthetic-tasks", loso.synthetic_tasks, "tasks of the synthetic prior (x20)"),
        ("pretrain-epochs", loso.pretrain_epochs, "sequence's epochs on the prior"),
        ("finetune-epochs", loso.finetune_epochs, "sequence's epochs on the corpus"),
        ("gbm-rounds", loso.gbm_rounds, "gbm's boosting rounds"),
    ):
        parser.add_argument(f"--loso-{flag}", type=int, default=default, help=f"LOSO banks: {what}")
    options.add_json(parser)
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from forecaster.errors import InvalidArgumentError
    from forecaster.evaluation.accuracy import DEFAULT_MODELS, aggregate, format_table, score_corpus
    from forecaster.evaluation.loso import score_loso

    common = {
        "source_names": options.csv(args.sources),
        "model_names": options.csv(args.models) or list(DEFAULT_MODELS),
        "cutoffs": [float(c) for c in (options.csv(args.cutoffs) or [])],
        "max_runs_per_task": args.max_runs_per_task,
        "seed": args.seed,
        "workers": args.workers,
        "progress": not args.no_progress,
    }
    if args.protocol == "loso":
        if args.models_dir or args.tasks != "auto":
            raise InvalidArgumentError(
                "--models-dir and --tasks do not apply to --protocol loso: each source is "
                "scored, all its tasks, by the bank trained without it (see --loso-cache)."
            )
        training = LosoTraining(
            max_runs_per_task=args.loso_runs_per_task,
            synthetic_tasks=args.loso_synthetic_tasks,
            pretrain_epochs=args.loso_pretrain_epochs,
            finetune_epochs=args.loso_finetune_epochs,
            gbm_rounds=args.loso_gbm_rounds,
            seed=args.seed,
        )
        scores, names, _ = score_loso(
            args.corpus, training=training, cache=args.loso_cache, **common
        )
    else:
        scores, names = score_corpus(
            args.corpus,
            models_dir=options.models_dir(args.models_dir),
            heldout={"auto": None, "heldout": True, "all": False}[args.tasks],
            **common,
        )
    rows = aggregate(scores, names)
    if args.json:
        print(json.dumps({"results": rows}, indent=1))
    else:
        print(format_table(rows))
    return 0
