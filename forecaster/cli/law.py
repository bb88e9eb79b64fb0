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
        "logged. Prints the fitted parameters and writes OUT/<file name> for each --predict "
        "file, with step, lr, loss_pred, loss_q05, loss_q95 at that file's steps.",
    )
    parser.add_argument("--train", nargs="+", required=True, help="finished runs: step, lr, loss")
    parser.add_argument("--predict", nargs="+", required=True, help="planned schedules: step, lr")
    parser.add_argument("--out", required=True, help="folder for the forecasts")
    parser.add_argument(
        "--law", default="annealing_law", choices=["annealing_law", "multi_power_law"]
    )
    options.add_seed(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forecaster import planning

    train = [planning.read_schedule_csv(p, need_loss=True) for p in args.train]
    plans = [planning.read_schedule_csv(p, need_loss=False) for p in args.predict]
    fit = planning.fit_law(train, args.law)
    print(planning.describe(fit))
    for plan in plans:
        target = planning.predict(fit, plan, Path(args.out), seed=args.seed)
        print(f"wrote {target}")
    return 0
