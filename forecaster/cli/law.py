"""`forecaster law`: the LR-schedule law fitted on finished runs, forecasts for new schedules."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from forecaster.cli import options

if TYPE_CHECKING:
    from forecaster.cli.options import Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "law",
        help="fit the LR-schedule law on finished runs and forecast the loss under new schedules",
        description="CSV files with a header naming step, lr and (training files) loss. lr may "
        "be given at some steps only (held until the next); loss may be empty where it was not "
        "logged. Prints the fitted parameters with their standard errors and writes "
        "OUT/<file name> for each --predict schedule, with step, lr, loss_pred, loss_q05, "
        "loss_q95 at its steps. A schedule to predict may be a CSV (step, lr) or named: "
        "wsd:total=50000,peak=1e-3,decay=0.2,shape=sqrt,warmup=300 (kinds wsd, cosine, "
        "linear, constant).",
    )
    parser.add_argument("--train", nargs="+", required=True, help="finished runs: step, lr, loss")
    parser.add_argument(
        "--predict", nargs="+", required=True, help="planned schedules: CSV (step, lr) or named"
    )
    parser.add_argument("--out", help="folder for the forecasts (default: none written)")
    parser.add_argument(
        "--law", default="annealing_law", choices=["annealing_law", "multi_power_law"]
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="rank the --predict schedules by predicted final loss, with 5-95%% intervals",
    )
    parser.add_argument(
        "--plot", metavar="PNG", help="draw the fitted runs, the forecasts and the lr schedules"
    )
    options.add_seed(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forecaster import planning
    from forecaster.errors import InvalidArgumentError

    if not (args.out or args.compare or args.plot):
        raise InvalidArgumentError("nothing to do: give --out DIR, --compare or --plot PNG.")
    train = [planning.read_schedule_csv(p, need_loss=True) for p in args.train]
    plans = [planning.read_plan(p) for p in args.predict]
    fit = planning.fit_law(train, args.law)
    print(planning.describe(fit))
    results = [planning.forecast(fit, plan, seed=args.seed) for plan in plans]
    if args.out:
        for result in results:
            print(f"wrote {planning.write_forecast(result, Path(args.out))}")
    if args.compare:
        print(planning.compare(results))
    if args.plot:
        print(f"wrote {planning.plot(fit, train, results, Path(args.plot))}")
    return 0
