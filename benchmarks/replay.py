"""The replay benchmark: stopping policies and Optuna's pruners on every task of the corpus.

Runs `forecaster replay` over ../shared/datasets with every policy's parameter sweep, then
checks the targets of the stop/continue issue: compute_fraction <= 0.4 with mean_rel_regret
<= 0.005 and top1_kept >= 0.95 over the corpus (the mean over sources), whether the forecast
policy dominates each Optuna pruner, and the time of a decision on a cached and on a fresh
forecast through the Engine (SQLite file, one core). Prints the tables and writes them to
docs/benchmarks.md (section replay), the full per-source table to docs/replay.md and the
compute-vs-regret plot to docs/replay.png.

    python benchmarks/replay.py [--corpus ../shared/datasets] [--max-runs-per-task 20]
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core" for the timing
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.config import Settings  # noqa: E402
from forecaster.curves import Direction, Points  # noqa: E402
from forecaster.engine import Engine  # noqa: E402
from forecaster.evaluation import replay  # noqa: E402
from forecaster.models import create  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402
from forecaster.store import RunSpec, RunState, StudySpec  # noqa: E402
from forecaster.store.sqlite import SqliteStore  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODELS_DIR = Settings.from_env().models_dir  # FORECASTER_MODELS_DIR, else the shipped models


def time_decisions(repeats: int = 200) -> dict[str, float]:
    """Median ms: a report whose decision reuses the cached forecast; one that refits; and the
    forecaster's fit alone on the same curve."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(SqliteStore(Path(tmp) / "bench.db"), models=ModelBank.load(MODELS_DIR))
        engine.create_study(StudySpec("s", "loss", Direction.MIN, 10_000, None, "forecast", {}))
        steps = np.arange(10, 10_001, 10)
        for i in range(20):  # finished runs: the incumbent and the peers
            values = 1.0 + 0.05 * i + 3.0 * (steps / 100.0) ** -0.5
            engine.start_run("s", RunSpec(f"done{i}"))
            for chunk in np.array_split(np.arange(len(steps)), 10):
                engine.report("s", f"done{i}", Points.of(steps[chunk], values[chunk]))
            engine.finish_run("s", f"done{i}", RunState.FINISHED)
        engine.start_run("s", RunSpec("r"))
        values = 1.2 + 3.0 * (steps / 100.0) ** -0.5 + rng.normal(0, 0.002, len(steps))
        n = 400
        engine.report("s", "r", Points.of(steps[:n], values[:n]))
        cached, fresh = [], []
        for k in range(n, n + repeats):
            before = engine._runs[("s", "r")].fitted_points
            t0 = time.perf_counter()
            engine.report("s", "r", Points.of(steps[k : k + 1], values[k : k + 1]))
            dt = (time.perf_counter() - t0) * 1e3
            (cached if engine._runs[("s", "r")].fitted_points == before else fresh).append(dt)
        curve = engine._runs[("s", "r")].curve
        model = create("power_law")
        fits = []
        for _ in range(20):
            t0 = time.perf_counter()
            model.fit(curve.head(400))
            fits.append((time.perf_counter() - t0) * 1e3)
        t_append = []
        for k in range(n + repeats, n + repeats + 50):
            t0 = time.perf_counter()
            engine.store.append_points("s", "r", Points.of(steps[k : k + 1], values[k : k + 1]))
            t_append.append((time.perf_counter() - t0) * 1e3)
    return {
        "report, cached forecast": float(np.median(cached)),
        "report, fresh forecast": float(np.median(fresh)) if fresh else float("nan"),
        "store append alone": float(np.median(t_append)),
        "power_law fit alone (400 points)": float(np.median(fits)),
        "n_cached": len(cached),
        "n_fresh": len(fresh),
    }


def dominance(rows: list[dict]) -> list[list[object]]:
    """For each Optuna setting: the forecast setting that beats it, if one does."""
    ours = [r for r in rows if r["source"] == "all" and r["policy"] == "forecast"]
    out = []
    for o in (r for r in rows if r["source"] == "all" and r["policy"].startswith("optuna_")):
        better = [
            f
            for f in ours
            if (
                f["compute_fraction"] <= o["compute_fraction"]
                and f["mean_rel_regret"] < o["mean_rel_regret"]
            )
            or (
                f["mean_rel_regret"] <= o["mean_rel_regret"]
                and f["compute_fraction"] < o["compute_fraction"]
            )
        ]
        best = min(better, key=lambda f: f["compute_fraction"]) if better else None
        out.append(
            [
                f"{o['policy']} {replay._fmt(o['params'])}",
                f"{o['compute_fraction']:.3f}",
                f"{o['mean_rel_regret']:.4f}",
                f"{o['top1_kept']:.2f}",
                replay._fmt(best["params"]) if best else "none",
                f"{best['compute_fraction']:.3f}" if best else "-",
                f"{best['mean_rel_regret']:.4f}" if best else "-",
            ]
        )
    return out


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2

    speed = time_decisions()
    t0 = time.time()
    results = replay.replay_corpus(
        args.corpus,
        max_runs_per_task=args.max_runs_per_task,
        parallel=args.parallel,
        workers=args.workers,
        models_dir=MODELS_DIR,
    )
    elapsed = time.time() - t0
    rows = replay.summarize(results)
    overall = [r for r in rows if r["source"] == "all"]
    default = replay.Setting("forecast", (("epsilon", 0.05),))
    per_source = [
        r for r in rows
        if r["source"] != "all" and r["policy"] in ("forecast", "none") and
        (r["policy"] == "none" or r["params"] == dict(default.params))
    ]  # fmt: skip
    meets = [
        r for r in overall
        if r["compute_fraction"] <= 0.4 and r["mean_rel_regret"] <= 0.005
        and r["top1_kept"] >= 0.95
    ]  # fmt: skip

    lines = [
        f"`python benchmarks/replay.py --max-runs-per-task {args.max_runs_per_task}` "
        f"({len(results)} task replays in {elapsed:.0f} s; {platform.machine()}, "
        f"{os.cpu_count()} cores; runs arrive in a seeded order, {args.parallel} at a time; "
        "studies without the corpus targets).",
        "",
        "Over the corpus (each source weighs the same; compute = steps run / steps of "
        "running everything; regret = best result kept vs best final value, relative):",
        "",
        replay.format_table(overall),
        "",
        f"The default policy ({default.label}) per source:",
        "",
        replay.format_table(per_source),
        "",
        "Target compute <= 0.4 with regret <= 0.005 and top1_kept >= 0.95: "
        + (
            "met by " + ", ".join(f"{r['policy']} {replay._fmt(r['params'])}" for r in meets)
            if meets
            else "**not met** by any setting"
        )
        + ".",
        "",
        "Each Optuna pruner setting, and the forecast setting that dominates it (less compute "
        "at no more regret, or less regret at no more compute):",
        "",
        markdown_table(
            ["optuna", "compute", "regret", "top1", "forecast beating it", "compute", "regret"],
            dominance(rows),
        ),
        "",
        "Decision latency through the Engine (SQLite file, one core; median ms; a report "
        "stores its point, then decides):",
        "",
        markdown_table(
            ["what", "ms"],
            [[k, f"{v:.3f}"] for k, v in speed.items() if not k.startswith("n_")],
        ),
        "",
        "![compute vs regret](replay.png)",
        "",
        "Every source and setting: [replay.md](replay.md).",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        (DOCS / "replay.md").write_text(
            "# Replay: every source and setting\n\nWritten by `benchmarks/replay.py`.\n\n"
            + replay.format_table(rows)
            + "\n"
        )
        replay.plot(rows, DOCS / "replay.png")
        doc = write_section("replay", "## Replay: stopping policies\n\n" + body)
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
