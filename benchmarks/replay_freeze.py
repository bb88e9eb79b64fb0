"""Freeze-thaw, single runs and target precision on the replay corpus (issue 17).

Four replays of ../shared/datasets, bounded by --max-runs-per-task:
1. the default policy (forecast, epsilon 0.05) per source: compute, regret, top-1 kept, and
   the frontier target (compute <= 0.40 at regret <= 0.5% with top-1 >= 0.95);
2. a fixed compute budget of 0.3 per task: the forecast policy pausing its unpromising runs
   and resuming them by the ranking (RankRuns' figure) against Optuna's Hyperband and our ASHA
   cut at the same budget, per source (regret: lower is better);
3. each run alone (no study): compute saved and metric given up by CONVERGED (delta 0.002)
   and by the cost-aware rule priced against the run's own best (min_gain_rate 0.01);
4. with the corpus targets: runs stopped as TARGET_UNREACHABLE that would have reached it.

Writes the tables to docs/benchmarks.md (section replay_freeze).

    python benchmarks/replay_freeze.py [--max-runs-per-task 10] [--max-reports 20]
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.config import Settings  # noqa: E402
from forecaster.evaluation import replay  # noqa: E402

MODELS_DIR = Settings.from_env().models_dir
DEFAULT = "forecast:epsilon=0.05"
FREEZE = "forecast:epsilon=0.05,pause=true"
BUDGET_RIVALS = ("optuna_hyperband:reduction_factor=3", "asha:eta=3")
SINGLE = ("forecast:delta=0.002", "forecast:min_gain_rate=0.01")
CAVEAT = (
    "Bounded run: with `--max-reports 10` a run is judged 10 times at most, so the hysteresis "
    "(3 votes) and the grace hold a stop back far longer than at the replay section's 100 "
    "reports: compare these compute figures with each other, not with that section's. A "
    "single run's metric given up is negative where its curve got worse after the stop "
    "(a validation metric past its best)."
)
TARGET_SOURCES = ("algoperf", "nanogpt_speedrun")  # the sources whose runs have targets


def rows_of(results: Sequence[replay.TaskResult]) -> list[dict[str, Any]]:
    return replay.summarize(results)


def label(row: dict[str, Any]) -> str:
    return f"{row['policy']}({replay._fmt(row['params'])})"


def f3(x: float) -> str:
    return f"{x:.3f}"


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.add_argument("--max-reports", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.set_defaults(max_runs_per_task=10)
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2
    common = dict(
        max_runs_per_task=args.max_runs_per_task,
        parallel=args.parallel,
        max_reports=args.max_reports,
        workers=args.workers,
        models_dir=MODELS_DIR,
    )
    t0 = time.time()
    default = rows_of(replay.replay_corpus(args.corpus, policy_specs=[DEFAULT, "none"], **common))
    t_default = time.time() - t0
    t0 = time.time()
    budget = rows_of(
        replay.replay_corpus(
            args.corpus, policy_specs=[FREEZE, *BUDGET_RIVALS], compute_budget=0.3, **common
        )
    )
    t_budget = time.time() - t0
    t0 = time.time()
    single = rows_of(
        replay.replay_corpus(args.corpus, policy_specs=list(SINGLE), single_runs=True, **common)
    )
    t_single = time.time() - t0
    t0 = time.time()
    targets = rows_of(
        replay.replay_corpus(
            args.corpus,
            policy_specs=[DEFAULT],
            use_targets=True,
            source_names=TARGET_SOURCES,
            **common,
        )
    )
    t_targets = time.time() - t0

    sources = sorted({r["source"] for r in default if r["source"] != "all"}) + ["all"]
    ours = {r["source"]: r for r in default if r["policy"] == "forecast"}
    table1 = []
    for s in sources:
        r = ours[s]
        meets = (
            r["compute_fraction"] <= 0.4
            and r["mean_rel_regret"] <= 0.005
            and r["top1_kept"] >= 0.95
        )
        table1.append(
            [s, r["n_tasks"], f3(r["compute_fraction"]), pct(r["mean_rel_regret"]),
             f"{r['top1_kept']:.2f}", "yes" if meets else "no"]
        )  # fmt: skip

    by = {(r["source"], label(r)): r for r in budget}
    names = [label(r) for r in budget if r["source"] == "all"]
    freeze = next(n for n in names if "pause" in n)
    rivals = [n for n in names if n != freeze]
    hyperband = next(n for n in rivals if n.startswith("optuna_hyperband"))
    table2 = []
    for s in sources:
        cells: list[object] = [s]
        for n in [freeze, *rivals]:
            r = by.get((s, n))
            cells.append(f"{f3(r['compute_fraction'])} / {pct(r['mean_rel_regret'])}" if r else "-")
        hb = by.get((s, hyperband))
        fr = by.get((s, freeze))
        cells.append(
            "yes" if hb and fr and fr["mean_rel_regret"] <= hb["mean_rel_regret"] else "no"
        )
        table2.append(cells)

    sby = {(r["source"], label(r)): r for r in single}
    snames = sorted({label(r) for r in single})
    table3 = []
    for s in sources:
        cells = [s]
        for n in snames:
            r = sby.get((s, n))
            cells.append(
                f"{1 - r['compute_fraction']:.3f} saved / {pct(r['mean_rel_regret'])} given up"
                if r
                else "-"
            )
        table3.append(cells)

    table4 = []
    for r in (x for x in targets if x["policy"] == "forecast"):
        n, false = r["n_reach_target"], r["n_false_unreachable"]
        table4.append(
            [r["source"], n, false, pct(false / n) if n else "-", f3(r["compute_fraction"])]
        )

    lines = [
        f"`python benchmarks/replay_freeze.py --max-runs-per-task {args.max_runs_per_task} "
        f"--max-reports {args.max_reports}` ({platform.machine()}, {os.cpu_count()} cores; "
        f"replays: default {t_default:.0f} s, budget {t_budget:.0f} s, single runs "
        f"{t_single:.0f} s, targets {t_targets:.0f} s; runs arrive in a seeded order, "
        f"{args.parallel} at a time).",
        "",
        CAVEAT,
        "",
        f"The default policy ({DEFAULT}) per source, against the frontier target "
        "(compute <= 0.40 at regret <= 0.5% with top-1 >= 0.95):",
        "",
        markdown_table(["source", "tasks", "compute", "regret", "top-1", "target met"], table1),
        "",
        "A fixed compute budget of 0.3 per task (everything stops when the runs have used 30% "
        "of the steps of running them all): compute / regret per source. The forecast policy "
        "pauses its unpromising runs and, once no new run waits, spends what is left on the "
        "paused run the ranking puts first; the rivals are cut at the same budget. The last "
        f"column: regret <= {hyperband}'s.",
        "",
        markdown_table(["source", freeze, *rivals, "<= hyperband"], table2),
        "",
        "Each run alone (no study, no incumbent: the 'when does it stop learning' question): "
        "the share of its steps saved and the final metric given up, relative, per source. "
        "CONVERGED is `delta`; the cost-aware rule prices the rest of the run against its own "
        "best (expected gain per fraction of the budget left < `min_gain_rate`).",
        "",
        markdown_table(["source", *snames], table3),
        "",
        f"With the corpus targets ({DEFAULT}, `--use-targets`; the sources that have targets): "
        "runs whose whole curve reaches "
        "the target, and those of them the policy stopped as TARGET_UNREACHABLE (the target: "
        "<= 1%).",
        "",
        markdown_table(
            ["source", "runs reaching", "stopped as unreachable", "false stops", "compute"], table4
        ),  # fmt: skip
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        doc = write_section(
            "replay_freeze", "## Replay: freeze-thaw, single runs, targets\n\n" + body
        )
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
