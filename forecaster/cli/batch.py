"""`forecaster batch`: every run of a corpus or a points file forecast and judged into Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.batch.inputs import BatchInput
    from forecaster.cli.options import Commands

IMPORT_KINDS = ("long", "tensorboard", "wandb", "mlflow")


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "batch",
        help="forecast and judge every run of a corpus or a points file into a Parquet file",
        description="Each task is a study (its completed runs are the incumbent and the "
        "schedule laws' history); every run, at its last point or at each cutoff, is "
        "forecast and judged by the study's policy as the service would, and written as one "
        "row: the quantiles and mean at the budget (or --horizon), P(reach target), "
        "steps-to-target quantiles, the decision with its reason and explanation. "
        "Resumable (--resume), on this machine or on a Ray cluster (--engine ray).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="folder of <source>/{runs,points}.parquet")
    source.add_argument(
        "--points",
        help="one Parquet or CSV of long-form points: run_id, step, value [, lr, wall_time, "
        "task, metric, direction, max_step, target, config]",
    )
    source.add_argument(
        "--import",
        dest="import_from",
        nargs=2,
        metavar=("KIND", "PATH"),
        help=f"logs read as by `forecaster import` ({', '.join(IMPORT_KINDS)})",
    )
    options.add_sources(parser)
    parser.add_argument("--out", required=True, help="the results file (.parquet)")
    parser.add_argument("--model", default="auto", help="the forecaster (default: auto)")
    parser.add_argument(
        "--policy",
        default="default",
        help="the studies' policy, as name or name:key=value,... (default: forecast)",
    )
    cut = parser.add_mutually_exclusive_group()
    cut.add_argument("--at", help="judge each run at these fractions of its last step: 0.2,0.5")
    cut.add_argument("--at-step", help="judge each run at these steps (runs that got there)")
    parser.add_argument("--horizon", type=int, help="forecast at this step (default: the budget)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted batch")
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--address", help="the Ray cluster (--engine ray; default: a local Ray)")
    options.add_workers(parser)
    options.add_models_dir(parser)
    parser.add_argument(
        "--runs-per-job", type=int, default=256, help="runs of a study judged per job"
    )
    parser.add_argument("--row-group-rows", type=int, default=4096, help="rows per row group")
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def batch_input(args: argparse.Namespace, out: Path) -> BatchInput:
    """The input the flags name; an import is written next to the results, once."""
    from forecaster.batch.inputs import CorpusInput, points_input

    if args.corpus:
        return CorpusInput(args.corpus, tuple(options.csv(args.sources) or ()))
    work = out.with_name(out.name + ".input")
    if args.points:
        return points_input(args.points, work)
    from forecaster.corpus.importers import ImportOptions, import_logs

    kind, path = args.import_from
    if kind not in IMPORT_KINDS:
        from forecaster.errors import InvalidArgumentError

        raise InvalidArgumentError(f"--import: unknown kind {kind!r}; one of {IMPORT_KINDS}.")
    folder = work / "imported"
    if not (folder / "runs.parquet").exists():
        import_logs(kind, path, str(folder), ImportOptions(), progress=not args.no_progress)
    return CorpusInput(str(folder))


def run(args: argparse.Namespace) -> int:
    import shutil

    from forecaster.batch import JudgeSpec, engines, run_batch
    from forecaster.errors import InvalidArgumentError
    from forecaster.evaluation.replay.settings import parse_policy

    out = Path(args.out)
    policy, params = parse_policy(args.policy)
    try:
        cutoffs = tuple(float(x) for x in options.csv(args.at) or ())
        at_steps = tuple(int(x) for x in options.csv(args.at_step) or ())
    except ValueError:
        raise InvalidArgumentError(
            "--at takes fractions (0.2,0.5) and --at-step whole steps (1000,5000)."
        ) from None
    if any(not 0 < c <= 1 for c in cutoffs):
        raise InvalidArgumentError(f"--at: fractions in (0, 1]; got {args.at}.")
    spec = JudgeSpec(
        model=args.model,
        policy=policy,
        policy_params=params,
        cutoffs=cutoffs,
        at_steps=at_steps,
        horizon=args.horizon,
    )
    engine = engines.create(args.engine, workers=args.workers, address=args.address)
    summary = run_batch(
        batch_input(args, out),
        out,
        spec,
        engine=engine,
        models_dir=options.models_dir(args.models_dir),
        runs_per_job=args.runs_per_job,
        row_group_rows=args.row_group_rows,
        resume=args.resume,
        progress=not args.no_progress,
    )
    shutil.rmtree(out.with_name(out.name + ".input"), ignore_errors=True)
    resumed = f" ({summary.skipped_runs} written before, kept)" if summary.skipped_runs else ""
    print(
        f"wrote {summary.rows} rows for {summary.runs} runs to {out}{resumed} in "
        f"{summary.seconds:.1f} s ({summary.runs_per_s:.0f} runs/s)",
        file=sys.stderr,
    )
    return 0
