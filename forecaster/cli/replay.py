"""`forecaster replay`: each task of a corpus replayed as a study under stopping policies."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    # The policies' default is listed in --help: the one import this parser needs.
    from forecaster.evaluation.replay import DEFAULT_POLICIES

    parser = commands.add_parser(
        "replay",
        help="replay each task of a corpus as a study under stopping policies (and Optuna's)",
        description="Each task of the corpus is a study: its runs arrive in a seeded random "
        "order, --parallel at a time, and report their points as they would to the service. "
        "Reports per source and policy setting: compute_fraction, mean_rel_regret, top1_kept, "
        "top3_kept and the metric given up by CONVERGED stops; draws compute vs regret to "
        "--plot. A policy is a name (its parameter sweep) or name:key=value,key=value.",
    )
    options.add_corpus(parser)
    options.add_sources(parser)
    parser.add_argument(
        "--policies",
        nargs="+",
        default=list(DEFAULT_POLICIES),
        help="policies to replay (default: all of %(default)s)",
    )
    options.add_max_runs_per_task(parser, default=30)
    parser.add_argument("--parallel", type=int, default=4, help="runs of a study running at once")
    options.add_seed(parser, help="which runs, and in which order")
    parser.add_argument("--max-reports", type=int, default=100, help="reports per run, at most")
    parser.add_argument("--forecaster", default="", help="the studies' forecaster (default auto)")
    parser.add_argument(
        "--use-targets",
        action="store_true",
        help="give the studies the corpus targets (TARGET_REACHED/UNREACHABLE come into play)",
    )
    parser.add_argument(
        "--compute-budget",
        type=float,
        help="stop each task once its runs used this fraction of the steps of running them all "
        "(a pausing policy, forecast:pause=true, resumes its paused runs by rank meanwhile)",
    )
    parser.add_argument(
        "--single-runs",
        action="store_true",
        help="replay each run alone, as a study of its own: compute saved and metric given up",
    )
    options.add_workers(parser)
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="where the tasks run: local processes or a Ray cluster")  # fmt: skip
    parser.add_argument("--address", help="the Ray cluster (--engine ray; default: a local Ray)")
    options.add_models_dir(parser)
    parser.add_argument("--plot", default="replay.png", help="PNG (or .svg) to draw ('' = none)")
    options.add_json(parser)
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from forecaster.evaluation import replay

    results = replay.replay_corpus(
        args.corpus,
        source_names=options.csv(args.sources),
        policy_specs=args.policies,
        max_runs_per_task=args.max_runs_per_task,
        parallel=args.parallel,
        seed=args.seed,
        max_reports=args.max_reports,
        forecaster=args.forecaster,
        use_targets=args.use_targets,
        compute_budget=args.compute_budget,
        single_runs=args.single_runs,
        workers=args.workers,
        progress=not args.no_progress,
        models_dir=options.models_dir(args.models_dir),
        engine=args.engine,
        address=args.address,
    )
    rows = replay.summarize(results)
    if args.plot:
        written = replay.plot(rows, args.plot)
        print(f"wrote {written}", file=sys.stderr)
    if args.json:
        print(json.dumps({"results": rows}, indent=1))
    else:
        print(replay.format_table(rows))
    return 0
