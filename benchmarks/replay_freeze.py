"""Freeze-thaw, single runs and target precision on the replay corpus (issue 17).

Four replays of ../shared/datasets, bounded by --max-runs-per-task:
1. the default policy (forecast, epsilon 0.05) per source: compute, regret, top-1 kept, and
   the frontier target (compute <= 0.40 at regret <= 0.5% with top-1 >= 0.95);
2. a fixed compute budget of 0.3 per task: the forecast policy pausing its unpromising runs
   and resuming them by the ranking (RankRuns' figure) against Optuna's Hyperband and our ASHA
   cut at the same budget, per source (regret: lower is better), with the endgame
   (ranking.finish_first: the budget's last run finished alone); the pausing setting (its
   hysteresis and epsilon) chosen leave-one-source-out and scored on the source left out;
3. each run alone (no study): compute saved and metric given up by CONVERGED (delta 0.002,
   its progress floor `converged_min_fraction` chosen leave-one-source-out) and by the
   cost-aware rule priced against the run's own best (min_gain_rate 0.01);
4. with the corpus targets: runs stopped as TARGET_UNREACHABLE that would have reached it,
   TARGET_UNREACHABLE's margin and progress floor chosen leave-one-task-out (only two sources
   have targets, so leaving one source out would choose on the other alone).

Every choice is made by sklearn's LeaveOneGroupOut: for each group (a source, or a task) the
setting is chosen on the other groups and the figures reported are the left-out group's under
it. Writes the tables to docs/benchmarks.md (section replay_freeze).

    python benchmarks/replay_freeze.py [--max-runs-per-task 10] [--max-reports 10]
        [--parts default,budget,single,targets] [--reuse budget,...]

--reuse PART reads that part's replay from the last run's cache (in the system's temporary
folder) instead of replaying it again.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.config import Settings  # noqa: E402
from forecaster.evaluation import replay  # noqa: E402
from forecaster.evaluation.replay.settings import Setting  # noqa: E402

MODELS_DIR = Settings.from_env().models_dir
DEFAULT = "forecast:epsilon=0.05"
FREEZE_SWEEP = tuple(
    f"forecast:epsilon={e},pause=true,hysteresis={h},incumbent_confidence={c}"
    for e, h, c in (
        (0.05, 3, 0.97),
        (0.05, 2, 0.97),
        (0.05, 1, 0.97),
        (0.2, 1, 0.97),
        (0.05, 1, 0.5),
        (0.2, 1, 0.5),
    )
)
BUDGET_RIVALS = ("optuna_hyperband:reduction_factor=3", "asha:eta=3")
CONVERGED_SWEEP = tuple(
    f"forecast:delta=0.002,converged_min_fraction={f}" for f in (0.0, 0.25, 0.5, 0.75)
)
COST_AWARE = tuple(f"forecast:min_gain_rate={g}" for g in (0.01, 0.003, 0.001))
TARGET_SWEEP = tuple(
    f"forecast:epsilon=0.05,target_margin={m},target_min_fraction={f}"
    for m in (0.0, 0.25, 0.5, 1.0)
    for f in (0.0, 0.3, 0.5)
)
MAX_FALSE_UNREACHABLE = 0.01  # the target: <= 1% of the runs that reach the target
MAX_GIVEN_UP = 0.005  # a single run's metric given up, on every source
PARTS = ("default", "budget", "single", "targets")
CAVEAT = (
    "Bounded run: with `--max-reports 10` a run is judged 10 times at most, so the hysteresis "
    "(3 votes) and the grace hold a stop back far longer than at the replay section's 100 "
    "reports: compare these compute figures with each other, not with that section's. A "
    "single run's metric given up is negative where its curve got worse after the stop "
    "(a validation metric past its best)."
)
TARGET_SOURCES = ("algoperf", "nanogpt_speedrun")  # the sources whose runs have targets


def label(row: dict[str, Any]) -> str:
    return f"{row['policy']}({replay._fmt(row['params'])})"


def f3(x: float) -> str:
    return f"{x:.3f}"


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def held_out(
    results: Sequence[replay.TaskResult],
    group_of: Callable[[replay.TaskResult], str],
    pick: Callable[[list[replay.TaskResult]], Setting],
) -> tuple[dict[str, Setting], list[replay.TaskResult]]:
    """LeaveOneGroupOut: per group, the setting `pick` chooses on the other groups' results,
    and the left-out group's results under that setting."""
    groups = np.array([group_of(r) for r in results])
    chosen: dict[str, Setting] = {}
    scored: list[replay.TaskResult] = []
    for train, test in LeaveOneGroupOut().split(np.zeros(len(results)), groups=groups):
        setting = pick([results[i] for i in train])
        chosen[str(groups[test[0]])] = setting
        scored.extend(results[i] for i in test if results[i].setting == setting)
    return chosen, scored


def by_setting(results: Sequence[replay.TaskResult]) -> dict[Setting, list[replay.TaskResult]]:
    out: dict[Setting, list[replay.TaskResult]] = {}
    for r in results:
        out.setdefault(r.setting, []).append(r)
    return out


def per_source(rs: Sequence[replay.TaskResult], key: str) -> dict[str, float]:
    return {r["source"]: r[key] for r in replay.summarize(rs) if r["source"] != "all"}


def pick_target(train: list[replay.TaskResult]) -> Setting:
    """The cheapest setting whose false TARGET_UNREACHABLE stops are <= 1% of the runs that
    reach the target (pooled); none such: the fewest false stops."""
    scores = []
    for setting, rs in by_setting(train).items():
        reach = sum(r.n_reach_target for r in rs)
        false = sum(r.n_false_unreachable for r in rs) / reach if reach else 0.0
        compute = float(np.mean([r.compute_fraction for r in rs]))
        over = false > MAX_FALSE_UNREACHABLE
        scores.append((over, false if over else 0.0, compute, setting.label, setting))
    return min(scores)[-1]


def pick_converged(train: list[replay.TaskResult]) -> Setting:
    """The CONVERGED setting that saves most while giving up <= 0.5% on every source;
    none such: the one whose worst source gives up least."""
    scores = []
    for setting, rs in by_setting(train).items():
        given = max(per_source(rs, "mean_rel_regret").values())
        compute = float(np.mean(list(per_source(rs, "compute_fraction").values())))
        over = given > MAX_GIVEN_UP
        scores.append((over, given if over else 0.0, compute, setting.label, setting))
    return min(scores)[-1]


def pick_freeze(train: list[replay.TaskResult]) -> Setting:
    """The pausing setting with the lowest regret at the budget, each source weighing the
    same."""
    scores = []
    for setting, rs in by_setting(train).items():
        regret = float(np.mean(list(per_source(rs, "mean_rel_regret").values())))
        scores.append((regret, setting.label, setting))
    return min(scores)[-1]


def pooled(scored: Sequence[replay.TaskResult]) -> dict[str, dict[str, Any]]:
    """The left-out groups' figures per source, and "all" over the sources (each weighing the
    same, as summarize does), whatever setting each fold chose."""
    rows = [r for r in replay.summarize(scored) if r["source"] != "all"]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["source"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for source, rs in by.items():  # one fold per source: one setting; a task fold: several
        n = sum(r["n_tasks"] for r in rs)
        out[source] = {
            **rs[0],
            **{k: sum(r[k] * r["n_tasks"] for r in rs) / n for k in MEANS},
            **{k: sum(r[k] for r in rs) for k in COUNTS},
        }
    out["all"] = {
        "source": "all",
        **{k: float(np.mean([r[k] for r in out.values()])) for k in MEANS},
        **{k: sum(r[k] for r in out.values()) for k in COUNTS},
    }
    return out


MEANS = ("compute_fraction", "mean_rel_regret", "top1_kept")
COUNTS = ("n_tasks", "n_reach_target", "n_false_unreachable")


def folds_say(chosen: dict[str, Setting]) -> str:
    counts = Counter(s.label for s in chosen.values())
    return ", ".join(f"{n} ({k} of {len(chosen)} folds)" for n, k in counts.most_common())


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.add_argument("--max-reports", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--reuse", default="", help="parts read from the last run's cache")
    parser.set_defaults(max_runs_per_task=10)
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2
    parts = [p for p in args.parts.split(",") if p]
    reuse = {p for p in args.reuse.split(",") if p}
    unknown = sorted(set(parts) - set(PARTS) | reuse - set(PARTS))
    if unknown:
        print(f"unknown part {', '.join(unknown)}; the parts are {', '.join(PARTS)}.")
        return 2
    common: dict[str, Any] = dict(
        max_runs_per_task=args.max_runs_per_task,
        parallel=args.parallel,
        max_reports=args.max_reports,
        workers=args.workers,
        models_dir=MODELS_DIR,
    )
    plans: dict[str, dict[str, Any]] = {
        "default": dict(policy_specs=[DEFAULT, "none"]),
        "budget": dict(policy_specs=[*FREEZE_SWEEP, *BUDGET_RIVALS], compute_budget=0.3),
        "single": dict(policy_specs=[*CONVERGED_SWEEP, *COST_AWARE], single_runs=True),
        "targets": dict(
            policy_specs=list(TARGET_SWEEP), use_targets=True, source_names=TARGET_SOURCES
        ),
    }
    cache = Path(tempfile.gettempdir()) / "replay_freeze"
    cache.mkdir(exist_ok=True)
    results: dict[str, list[replay.TaskResult]] = {}
    took: dict[str, str] = {}
    for part in parts:
        key = cache / f"{part}-{args.max_runs_per_task}-{args.max_reports}.pkl"
        if part in reuse and key.exists():
            results[part], seconds = pickle.loads(key.read_bytes())
            took[part] = f"{seconds:.0f} s, from the cache"
            continue
        t0 = time.time()
        results[part] = replay.replay_corpus(args.corpus, **plans[part], **common)
        took[part] = f"{time.time() - t0:.0f} s"
        key.write_bytes(pickle.dumps((results[part], time.time() - t0)))

    lines = [
        f"`python benchmarks/replay_freeze.py --max-runs-per-task {args.max_runs_per_task} "
        f"--max-reports {args.max_reports}` ({platform.machine()}, {os.cpu_count()} cores; "
        f"replays: {', '.join(f'{p} {t}' for p, t in took.items())}; runs arrive in a seeded "
        f"order, {args.parallel} at a time).",
        "",
        CAVEAT,
        "",
        "Every setting below that was chosen was chosen by sklearn's LeaveOneGroupOut: for each "
        "source (or task) left out, the setting is picked on the others and the figures shown "
        "are the left-out one's under it.",
    ]
    if "default" in results:
        lines += ["", *default_table(results["default"])]
    if "budget" in results:
        lines += ["", *budget_table(results["budget"])]
    if "single" in results:
        lines += ["", *single_table(results["single"])]
    if "targets" in results:
        lines += ["", *targets_table(results["targets"])]
    body = "\n".join(lines)
    print(body)
    if not args.no_write and set(parts) == set(PARTS):
        doc = write_section(
            "replay_freeze", "## Replay: freeze-thaw, single runs, targets\n\n" + body
        )
        print(f"wrote {doc}")
    return 0


def sources_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({r["source"] for r in rows if r["source"] != "all"}) + ["all"]


def default_table(results: list[replay.TaskResult]) -> list[str]:
    rows = replay.summarize(results)
    ours = {r["source"]: r for r in rows if r["policy"] == "forecast"}
    table = []
    for s in sources_of(rows):
        r = ours[s]
        meets = (
            r["compute_fraction"] <= 0.4
            and r["mean_rel_regret"] <= 0.005
            and r["top1_kept"] >= 0.95
        )
        table.append(
            [s, r["n_tasks"], f3(r["compute_fraction"]), pct(r["mean_rel_regret"]),
             f"{r['top1_kept']:.2f}", "yes" if meets else "no"]
        )  # fmt: skip
    return [
        f"The default policy ({DEFAULT}) per source, against the frontier target "
        "(compute <= 0.40 at regret <= 0.5% with top-1 >= 0.95):",
        "",
        markdown_table(["source", "tasks", "compute", "regret", "top-1", "target met"], table),
    ]


def budget_table(results: list[replay.TaskResult]) -> list[str]:
    freeze = [r for r in results if dict(r.setting.params).get("pause")]
    rivals = [r for r in results if not dict(r.setting.params).get("pause")]
    chosen, scored = held_out(freeze, lambda r: r.source, pick_freeze)
    rows = replay.summarize(rivals)
    by = {(r["source"], label(r)): r for r in rows}
    rival_names = sorted({label(r) for r in rows})
    hyperband = next(n for n in rival_names if n.startswith("optuna_hyperband"))
    ours = pooled(scored)
    fixed = {(r["source"], label(r)): r for r in replay.summarize(freeze)}
    fixed_names = sorted({label(r) for r in replay.summarize(freeze)})
    table = []
    for s in sources_of(rows):
        r = ours.get(s)
        hb = by.get((s, hyperband))
        cells: list[object] = [s, chosen[s].label if s in chosen else "(each its own)"]
        cells.append(f"{f3(r['compute_fraction'])} / {pct(r['mean_rel_regret'])}" if r else "-")
        for n in rival_names:
            x = by.get((s, n))
            cells.append(f"{f3(x['compute_fraction'])} / {pct(x['mean_rel_regret'])}" if x else "-")
        cells.append("yes" if r and hb and r["mean_rel_regret"] <= hb["mean_rel_regret"] else "no")
        table.append(cells)
    sweep = []
    for s in sources_of(rows):
        cells = [s]
        for n in fixed_names:
            x = fixed.get((s, n))
            cells.append(pct(x["mean_rel_regret"]) if x else "-")
        sweep.append(cells)
    return [
        "A fixed compute budget of 0.3 per task (everything stops when the runs have used 30% "
        "of the steps of running them all): compute / regret per source. The forecast policy "
        "pauses its unpromising runs and, once no new run waits, spends what is left on the "
        "paused run the ranking puts first; once the budget left would no longer finish the "
        "best-forecast run that fits in it, that run finishes alone (ranking.finish_first, the "
        "endgame). The rivals are cut at the same budget. The pausing setting (hysteresis, "
        "epsilon, incumbent_confidence) is chosen leave-one-source-out (lowest mean regret over "
        "the other sources) and scored on the source left out; the 'all' row pools the "
        f"left-out sources. Chosen: {folds_say(chosen)}. The last column: regret <= "
        f"{hyperband}'s.",
        "",
        markdown_table(
            ["source", "pause setting (LOSO)", "forecast, pausing", *rival_names, "<= hyperband"],
            table,
        ),  # fmt: skip
        "",
        "Every pausing setting's regret at the budget (in-sample, what the choice saw):",
        "",
        markdown_table(["source", *fixed_names], sweep),
    ]


def single_table(results: list[replay.TaskResult]) -> list[str]:
    converged = [r for r in results if dict(r.setting.params).get("delta")]
    chosen, scored = held_out(converged, lambda r: r.source, pick_converged)
    ours = pooled(scored)
    priced = [r for r in results if dict(r.setting.params).get("min_gain_rate")]
    chosen_rate, scored_rate = held_out(priced, lambda r: r.source, pick_converged)
    ours_rate = pooled(scored_rate)
    rows = replay.summarize(results)
    by = {(r["source"], label(r)): r for r in rows}
    names = sorted({label(r) for r in rows})

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        return f"{1 - r['compute_fraction']:.3f} saved / {pct(r['mean_rel_regret'])} given up"

    table = []
    for s in sources_of(rows):
        table.append(
            [s, cell(ours.get(s)), chosen[s].label if s in chosen else "(each its own)",
             cell(ours_rate.get(s)),
             chosen_rate[s].label if s in chosen_rate else "(each its own)",
             *(cell(by.get((s, n))) for n in names)]
        )  # fmt: skip
    return [
        "Each run alone (no study, no incumbent: the 'when does it stop learning' question): "
        "the share of its steps saved and the final metric given up, relative, per source. "
        "CONVERGED is `delta`, its progress floor `converged_min_fraction` chosen "
        "leave-one-source-out (the most saved with <= 0.5% given up on every other source) and "
        "scored on the source left out; the cost-aware rule prices the rest of the run against "
        "its own best (expected gain per fraction of the budget left < `min_gain_rate`), "
        "`min_gain_rate` chosen the same way. "
        f"Chosen: {folds_say(chosen)}; {folds_say(chosen_rate)}.",
        "",
        markdown_table(
            [
                "source",
                "CONVERGED (LOSO)",
                "its setting",
                "cost-aware (LOSO)",
                "its setting",
                *names,
            ],
            table,
        ),  # fmt: skip
    ]


def targets_table(results: list[replay.TaskResult]) -> list[str]:
    chosen, scored = held_out(results, lambda r: f"{r.source}/{r.task}", pick_target)
    table = []
    for r in pooled(scored).values():
        n, false = r["n_reach_target"], r["n_false_unreachable"]
        table.append(
            [r["source"], n, false, pct(false / n) if n else "-", f3(r["compute_fraction"])]
        )
    sweep = []
    for r in (x for x in replay.summarize(results) if x["source"] == "all"):
        n, false = r["n_reach_target"], r["n_false_unreachable"]
        sweep.append([label(r), n, false, pct(false / n) if n else "-", f3(r["compute_fraction"])])
    return [
        "With the corpus targets (`--use-targets`; the sources that have targets): runs whose "
        "whole curve reaches the target, and those of them the policy stopped as "
        "TARGET_UNREACHABLE (the target: <= 1%). TARGET_UNREACHABLE's margin (`target_margin`, "
        "in the run's observed range, on the calibrated optimistic bound) and progress floor "
        "(`target_min_fraction`) are chosen leave-one-task-out (the cheapest setting with <= 1% "
        "false stops on the other tasks) and scored on the task left out: only two sources "
        "have targets, and leaving one out would choose on the other alone. Chosen: "
        f"{folds_say(chosen)}.",
        "",
        markdown_table(
            ["source", "runs reaching", "stopped as unreachable", "false stops", "compute"], table
        ),  # fmt: skip
        "",
        "Every setting over both sources (in-sample, what the choice saw):",
        "",
        markdown_table(
            ["setting", "runs reaching", "stopped as unreachable", "false stops", "compute"], sweep
        ),  # fmt: skip
    ]


if __name__ == "__main__":
    sys.exit(main())
