"""Scoring a replayed task, and the figures per source and setting.

Per source and policy setting: compute_fraction (steps run / steps of running every run to its
end, per task, averaged over tasks), mean_rel_regret (best result kept vs the best final value
of the task, relative, averaged over tasks), top1_kept and top3_kept (share of tasks whose best
run, or one of its best three, was not cut as unpromising, diverged or unreachable) and, for
CONVERGED stops, the metric given up (relative to the run's final value).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.curves import Curve, to_loss
from forecaster.evaluation.replay.settings import Setting
from forecaster.policies import Reason

if TYPE_CHECKING:
    from forecaster.evaluation.replay.simulate import _Run

CUT = frozenset(
    {Reason.UNPROMISING, Reason.DIVERGED, Reason.TARGET_UNREACHABLE, Reason.NOT_LEARNING}
)


@dataclass(frozen=True)
class TaskResult:
    source: str
    task: str
    setting: Setting
    n_runs: int
    compute_fraction: float
    rel_regret: float
    top1_kept: bool
    top3_kept: bool
    converged_given_up: tuple[float, ...] = field(default=())
    stops: tuple[tuple[str, int], ...] = ()  # (reason, count)
    outcomes: tuple[tuple[str, int, str], ...] = ()  # (run_id, last step run, stop reason or "")
    # With a target: runs whose whole curve reaches it, and those of them stopped as unreachable.
    n_reach_target: int = 0
    n_false_unreachable: int = 0


def reaches(curve: Curve) -> bool:
    """Whether any point of the curve meets its target (False without one)."""
    if curve.target is None:
        return False
    loss = to_loss(curve.values, curve.direction)
    return bool(np.any(loss[np.isfinite(loss)] <= float(to_loss(curve.target, curve.direction))))


def score_task(
    source: str, task: str, setting: Setting, runs: Sequence[_Run], *, budgeted: bool = False
) -> TaskResult:
    """The figures of one task replayed under one setting, from its runs as they ended. Under
    a compute budget (budgeted) a run the budget cut, or never let start, counts as cut."""
    direction = runs[0].curve.direction
    finals = np.array([to_loss(r.curve.last_value, direction) for r in runs], dtype=float)
    finals = np.where(np.isfinite(finals), finals, np.inf)
    kept = np.array([r.kept for r in runs], dtype=float)
    kept = np.where(np.isfinite(kept), kept, np.inf)
    used = sum(float(r.seen.last_step) for r in runs)
    full = sum(float(r.curve.last_step) for r in runs)
    order = np.argsort(finals, kind="stable")
    best = float(finals[order[0]])
    found = float(kept.min())
    if math.isfinite(best) and math.isfinite(found):
        regret = (found - best) / max(abs(best), 1e-12)
    else:
        regret = math.nan if not math.isfinite(best) else math.inf
    cut_by = CUT | {Reason.BUDGET_EXHAUSTED} if budgeted else CUT
    cut = [runs[i].stop_reason in cut_by or (budgeted and not runs[i].reported) for i in order]
    reachers = [r for r in runs if reaches(r.curve)]
    given_up = tuple(
        float((r.kept - f) / max(abs(f), 1e-12))
        for r, f in zip(runs, finals, strict=True)
        if r.stop_reason is Reason.CONVERGED and math.isfinite(f) and math.isfinite(r.kept)
    )
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        if r.stop_reason is not None:
            counts[r.stop_reason.value] += 1
    return TaskResult(
        source=source,
        task=task,
        setting=setting,
        n_runs=len(runs),
        compute_fraction=used / full if full > 0 else 1.0,
        rel_regret=regret,
        top1_kept=not cut[0],
        top3_kept=not all(cut[:3]),
        converged_given_up=given_up,
        stops=tuple(sorted(counts.items())),
        outcomes=tuple(
            (r.logged.run_id, r.seen.last_step, r.stop_reason.value if r.stop_reason else "")
            for r in runs
        ),
        n_reach_target=len(reachers),
        n_false_unreachable=sum(r.stop_reason is Reason.TARGET_UNREACHABLE for r in reachers),
    )


def summarize(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """Per (source, setting), then per setting over the corpus ("all": each source weighs the
    same): the figures the replay reports."""
    groups: dict[tuple[str, Setting], list[TaskResult]] = defaultdict(list)
    for r in results:
        groups[(r.source, r.setting)].append(r)
    rows: list[dict[str, Any]] = []
    by_setting: dict[Setting, list[dict[str, Any]]] = defaultdict(list)
    for (source, setting), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].label)):
        row = _row(source, setting, rs)
        rows.append(row)
        by_setting[setting].append(row)
    overall = []
    for setting, per_source in sorted(by_setting.items(), key=lambda kv: kv[0].label):
        mean = {
            k: float(np.nanmean([r[k] for r in per_source]))
            for k in ("compute_fraction", "mean_rel_regret", "top1_kept", "top3_kept")
        }
        given = [r["converged_given_up"] for r in per_source if r["n_converged"]]
        everywhere = [r for rs in groups.values() for r in rs if r.setting == setting]
        overall.append(
            {
                "source": "all",
                "policy": setting.family,
                "params": dict(setting.params),
                "n_tasks": sum(r["n_tasks"] for r in per_source),
                **mean,
                "n_converged": sum(r["n_converged"] for r in per_source),
                "converged_given_up": float(np.mean(given)) if given else 0.0,
                "n_stops": sum(r["n_stops"] for r in per_source),
                "n_reach_target": sum(r["n_reach_target"] for r in per_source),
                "n_false_unreachable": sum(r["n_false_unreachable"] for r in per_source),
                "note": why_no_stop(setting, everywhere),
            }
        )
    return rows + overall


def why_no_stop(setting: Setting, results: Sequence[TaskResult]) -> str:
    """Empty when the setting stopped some run; else the reason it never did, which is the
    first thing a person asks of a row with compute 1.0."""
    if setting.family == "none" or any(r.stops for r in results):
        return ""
    largest = max((r.n_runs for r in results), default=0)
    params = dict(setting.params)
    if setting.family == "optuna_median":
        few = ", fewer than the 5 it needs" if largest <= 5 else ""
        return (
            "never stopped a run: Optuna's MedianPruner prunes only once n_startup_trials=5 "
            f"trials of the task have completed, and the largest task here has {largest} "
            f"runs{few}. Replay larger tasks (--max-runs-per-task) or fewer at a time "
            "(--parallel)."
        )
    if setting.family in ("median", "percentile"):
        peers = params.get("min_peers", 3)
        return (
            f"never stopped a run: the rule compares a run with min_peers={peers} other runs "
            f"that reached the same step, and the largest task here has {largest} runs "
            "replayed side by side. Replay larger tasks or fewer at a time (--parallel)."
        )
    return "never stopped a run: no curve of these tasks met the setting's condition."


def _row(source: str, setting: Setting, rs: list[TaskResult]) -> dict[str, Any]:
    regrets = np.array([r.rel_regret for r in rs], dtype=float)
    given = [g for r in rs for g in r.converged_given_up]
    return {
        "source": source,
        "policy": setting.family,
        "params": dict(setting.params),
        "n_tasks": len(rs),
        "compute_fraction": float(np.mean([r.compute_fraction for r in rs])),
        "mean_rel_regret": float(np.nanmean(regrets)) if np.isfinite(regrets).any() else math.nan,
        "top1_kept": float(np.mean([r.top1_kept for r in rs])),
        "top3_kept": float(np.mean([r.top3_kept for r in rs])),
        "n_converged": len(given),
        "converged_given_up": float(np.mean(given)) if given else 0.0,
        "n_stops": sum(n for r in rs for _, n in r.stops),
        "n_reach_target": sum(r.n_reach_target for r in rs),
        "n_false_unreachable": sum(r.n_false_unreachable for r in rs),
        "note": why_no_stop(setting, rs),
    }
