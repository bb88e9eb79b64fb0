"""The command line: `forecaster serve | demo | health | eval | replay | law | train | import`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from forecaster import __version__
from forecaster.config import Settings, settings_table
from forecaster.errors import ForecasterError


def _serve(args: argparse.Namespace) -> int:
    from forecaster.server import logs
    from forecaster.server.app import serve

    settings = Settings.from_env(
        host=args.host, port=args.port, db=args.db, log_level=args.log_level
    )
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from forecaster import demo

    return demo.main(args.address, args.db)


def _health(args: argparse.Namespace) -> int:
    """Exit 0 when the service answers SERVING: the container's HEALTHCHECK."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = Settings.from_env()
    # A service bound to every interface is asked on loopback.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    address = args.address or f"{host}:{settings.port}"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            ).status
        except grpc.RpcError as e:
            print(f"{address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{address}: {name}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def _models_dir(flag: str | None) -> str:
    """--models-dir, else FORECASTER_MODELS_DIR, else "" (the shipped models), as `serve`."""
    import os

    return flag if flag is not None else os.environ.get("FORECASTER_MODELS_DIR", "")


def _eval(args: argparse.Namespace) -> int:
    import json

    from forecaster.evaluation.accuracy import evaluate, format_table

    rows = evaluate(
        args.corpus,
        source_names=_csv(args.sources),
        model_names=_csv(args.models) or list(_default_models()),
        cutoffs=[float(c) for c in (_csv(args.cutoffs) or [])],
        max_runs_per_task=args.max_runs_per_task,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        models_dir=_models_dir(args.models_dir),
        heldout={"auto": None, "heldout": True, "all": False}[args.tasks],
    )
    if args.json:
        print(json.dumps({"results": rows}, indent=1))
    else:
        print(format_table(rows))
    return 0


def _replay(args: argparse.Namespace) -> int:
    import json

    from forecaster.evaluation import replay

    results = replay.replay_corpus(
        args.corpus,
        source_names=_csv(args.sources),
        policy_specs=args.policies,
        max_runs_per_task=args.max_runs_per_task,
        parallel=args.parallel,
        seed=args.seed,
        max_reports=args.max_reports,
        forecaster=args.forecaster,
        use_targets=args.use_targets,
        workers=args.workers,
        progress=not args.no_progress,
        models_dir=_models_dir(None),
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


def _train(args: argparse.Namespace) -> int:
    import json

    from forecaster.training import format_metrics, train_all

    metrics = train_all(
        args.corpus,
        args.out,
        source_names=_csv(args.sources),
        max_runs_per_task=args.max_runs_per_task,
        synthetic_tasks=args.synthetic_tasks,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        gbm_rounds=args.gbm_rounds,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({"heldout_metrics": metrics}, indent=1))
    else:
        print(format_metrics(metrics))
    return 0


def _import(args: argparse.Namespace) -> int:
    from forecaster.corpus.importers import ImportOptions, import_logs

    options = ImportOptions(
        metric=args.metric, direction=args.direction, task=args.task, max_step=args.max_step
    )
    out, n = import_logs(args.kind, args.path, args.out, options, progress=not args.no_progress)
    print(f"wrote {n} runs to {out} (runs.parquet, points.parquet)")
    return 0


def _default_models() -> tuple[str, ...]:
    from forecaster.evaluation.accuracy import DEFAULT_MODELS

    return DEFAULT_MODELS


def _replay_policies() -> tuple[str, ...]:
    from forecaster.evaluation.replay import DEFAULT_POLICIES

    return DEFAULT_POLICIES


def _csv(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _law(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster",
        description="Forecasts learning curves of training jobs and tells them to stop or "
        "continue.",
    )
    parser.add_argument("--version", action="version", version=f"forecaster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rows = "\n".join(f"  {env:<36} default {default}" for _, env, default in settings_table())
    serve = sub.add_parser(
        "serve",
        help="run the gRPC service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every setting can also come from the environment:\n{rows}",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 50051; 0 = any)")
    serve.add_argument("--db", help="database URL (default sqlite:/// in the user data dir)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo",
        help="simulate training runs against a service and watch forecasts and decisions evolve",
    )
    demo.add_argument("--address", help="a running service (default: start one in-process)")
    demo.add_argument(
        "--db", help="database URL for the in-process service (default: a temporary file)"
    )
    demo.set_defaults(func=_demo)

    health = sub.add_parser("health", help="ask a service's gRPC health check; exit 0 when SERVING")
    health.add_argument("--address", help="default FORECASTER_HOST:FORECASTER_PORT")
    health.add_argument("--service", default="", help="service name ('' = overall)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=_health)

    ev = sub.add_parser(
        "eval",
        help="forecast accuracy over a corpus of logged runs (cut each run, forecast its end)",
        description="Cuts each run of a corpus (the schema of datasets/SCHEMA.md) at fractions "
        "of its final logged step, forecasts the value at that step, and reports per source, "
        "model and cutoff: mae, medae, their ratios to the last value, interval coverage, "
        "CRPS and fit time.",
    )
    ev.add_argument("--corpus", required=True, help="folder of <source>/{runs,points}.parquet")
    ev.add_argument("--sources", help="comma-separated source folders (default: all)")
    ev.add_argument(
        "--models",
        help="comma-separated forecasters (default: last_value, damped_trend, pow3, power_law, "
        "annealing_law); last_value is always scored, as the baseline; gbm, sequence and "
        "ensemble are the learned ones",
    )
    ev.add_argument("--cutoffs", default="0.1,0.2,0.3,0.5", help="fractions of the final step")
    ev.add_argument("--max-runs-per-task", type=int, default=50, help="0 = every run")
    ev.add_argument("--seed", type=int, default=0, help="which runs are sampled per task")
    ev.add_argument("--workers", type=int, help="processes (default: the CPU count, up to 8)")
    ev.add_argument(
        "--models-dir",
        help="learned models' artifacts (default: FORECASTER_MODELS_DIR, else the shipped ones)",
    )
    ev.add_argument(
        "--tasks",
        choices=["auto", "heldout", "all"],
        default="auto",
        help="heldout: only tasks the learned models never trained on (auto: when one of "
        "gbm, sequence, ensemble is evaluated)",
    )
    ev.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ev.set_defaults(func=_eval)

    rp = sub.add_parser(
        "replay",
        help="replay each task of a corpus as a study under stopping policies (and Optuna's)",
        description="Each task of the corpus is a study: its runs arrive in a seeded random "
        "order, --parallel at a time, and report their points as they would to the service. "
        "Reports per source and policy setting: compute_fraction, mean_rel_regret, top1_kept, "
        "top3_kept and the metric given up by CONVERGED stops; draws compute vs regret to "
        "--plot. A policy is a name (its parameter sweep) or name:key=value,key=value.",
    )
    rp.add_argument("--corpus", required=True, help="folder of <source>/{runs,points}.parquet")
    rp.add_argument("--sources", help="comma-separated source folders (default: all)")
    rp.add_argument(
        "--policies",
        nargs="+",
        default=list(_replay_policies()),
        help="policies to replay (default: all of %(default)s)",
    )
    rp.add_argument("--max-runs-per-task", type=int, default=30, help="0 = every run")
    rp.add_argument("--parallel", type=int, default=4, help="runs of a study running at once")
    rp.add_argument("--seed", type=int, default=0, help="which runs, and in which order")
    rp.add_argument("--max-reports", type=int, default=100, help="reports per run, at most")
    rp.add_argument("--forecaster", default="", help="the studies' forecaster (default auto)")
    rp.add_argument(
        "--use-targets",
        action="store_true",
        help="give the studies the corpus targets (TARGET_REACHED/UNREACHABLE come into play)",
    )
    rp.add_argument("--workers", type=int, help="processes (default: the CPU count, up to 8)")
    rp.add_argument("--plot", default="replay.png", help="PNG to draw ('' = none)")
    rp.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    rp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    rp.set_defaults(func=_replay)

    tr = sub.add_parser(
        "train",
        help="train the learned forecasters (gbm, sequence, ensemble) on a corpus",
        description="Splits each source's tasks into train, calib and test (a task is never in "
        "two), trains gbm on train, pre-trains sequence on synthetic curves and fine-tunes it "
        "on train, stacks and calibrates the ensemble on calib, scores all on test, and writes "
        "OUT/<name>/ (meta.json with version, corpus fingerprint and held-out metrics). Serve "
        "them with FORECASTER_MODELS_DIR=OUT forecaster serve.",
    )
    tr.add_argument("--corpus", required=True, help="folder of <source>/{runs,points}.parquet")
    tr.add_argument("--out", required=True, help="folder for the artifacts")
    tr.add_argument("--sources", help="comma-separated source folders (default: all)")
    tr.add_argument("--max-runs-per-task", type=int, default=60, help="runs sampled per task")
    tr.add_argument("--synthetic-tasks", type=int, default=150, help="tasks of the prior (x20)")
    tr.add_argument("--pretrain-epochs", type=int, default=6)
    tr.add_argument("--finetune-epochs", type=int, default=10)
    tr.add_argument("--gbm-rounds", type=int, default=300)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--workers", type=int, help="processes (default: the CPU count, up to 8)")
    tr.add_argument("--json", action="store_true", help="print the held-out metrics as JSON")
    tr.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    tr.set_defaults(func=_train)

    im = sub.add_parser(
        "import",
        help="turn your own logs (long CSV/Parquet, TensorBoard, W&B, MLflow) into a corpus",
        description="Reads PATH as KIND and writes OUT/runs.parquet and OUT/points.parquet in "
        "the corpus schema, ready for `forecaster eval`, `replay` and `train` (pass the folder "
        "holding OUT as --corpus). long: columns run_id, step, value [, lr, wall_time, task, "
        "metric, direction, max_step, target]. tensorboard: event files, one run per folder. "
        "wandb: run-history CSV/JSON exports. mlflow: an mlruns/ file store.",
    )
    im.add_argument("kind", choices=["long", "tensorboard", "wandb", "mlflow"])
    im.add_argument("path", help="the file or folder to read")
    im.add_argument(
        "--out", required=True, help="the source folder to write (its name is the source)"
    )
    im.add_argument("--metric", help="the metric to import (default: a validation loss)")
    im.add_argument("--direction", choices=["min", "max"], help="default: from the metric name")
    im.add_argument("--task", help="the task of every run (default: from the layout)")
    im.add_argument("--max-step", type=int, help="the budget of every run, when known")
    im.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    im.set_defaults(func=_import)

    law = sub.add_parser(
        "law",
        help="fit the LR-schedule law on finished runs and forecast the loss under new schedules",
        description="CSV files with a header naming step, lr and (training files) loss. lr may "
        "be given at some steps only (held until the next); loss may be empty where it was not "
        "logged. Prints the fitted parameters and writes OUT/<file name> for each --predict "
        "file, with step, lr, loss_pred, loss_q05, loss_q95 at that file's steps.",
    )
    law.add_argument("--train", nargs="+", required=True, help="finished runs: step, lr, loss")
    law.add_argument("--predict", nargs="+", required=True, help="planned schedules: step, lr")
    law.add_argument("--out", required=True, help="folder for the forecasts")
    law.add_argument("--law", default="annealing_law", choices=["annealing_law", "multi_power_law"])
    law.add_argument("--seed", type=int, default=0)
    law.set_defaults(func=_law)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ForecasterError as e:
        print(f"forecaster: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
