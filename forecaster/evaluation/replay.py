"""Replay: each task of a corpus as a study, run under a stopping policy, as the service sees it.

Runs arrive in a seeded random order, `parallel` at a time. Each running run reports its next
batch of points (a run reports at most `max_reports` times, as a plugin batching its points
would), in turn; after each report the policy decides through `engine.judge`, the same path
the service takes (same refit schedule, same stop votes, same incumbent and peers). A stopped
run's result is its value at the step it stopped: that is what the user keeps. Optuna's
pruners run in the same schedule, driven through Optuna itself (ask, report, should_prune,
tell; in-memory storage).

Per source and policy setting: compute_fraction (steps run / steps of running every run to its
end, per task, averaged over tasks), mean_rel_regret (best result kept vs the best final value
of the task, relative, averaged over tasks), top1_kept and top3_kept (share of tasks whose best
run, or one of its best three, was not cut as unpromising, diverged or unreachable) and, for
CONVERGED stops, the metric given up (relative to the run's final value).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from forecaster import models, policies
from forecaster.corpus.reader import LoggedRun, Source
from forecaster.curves import Curve, Direction, to_loss
from forecaster.engine import Standing, fit_forecast, history_key, incumbent_of, judge
from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.pool import run_jobs, sample_tasks
from forecaster.models import Prediction, StudyHistory
from forecaster.models.artifacts import ModelBank
from forecaster.policies import Reason, RunView, StudyContext
from forecaster.policies.base import Peers
from forecaster.store import StoredDecision

CUT = frozenset({Reason.UNPROMISING.value, Reason.DIVERGED.value, Reason.TARGET_UNREACHABLE.value})

# policy family -> (main parameter, the values swept for the compute-vs-regret curve)
SWEEPS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "forecast": ("epsilon", (0.01, 0.02, 0.05, 0.1, 0.2)),
    "median": ("grace_fraction", (0.05, 0.1, 0.2, 0.4)),
    "percentile": ("percentile", (10.0, 25.0, 50.0)),
    "asha": ("eta", (2.0, 3.0, 4.0)),
    "patience": ("patience", (3, 5, 10)),
    "optuna_median": ("n_warmup_fraction", (0.05, 0.1, 0.2, 0.4)),
    "optuna_sha": ("reduction_factor", (2, 3, 4)),
    "optuna_hyperband": ("reduction_factor", (2, 3, 4)),
    "optuna_patient": ("patience", (3, 5, 10)),
    "none": ("", (None,)),
}
DEFAULT_POLICIES = tuple(SWEEPS)
OPTUNA = ("optuna_median", "optuna_sha", "optuna_hyperband", "optuna_patient")


@dataclass(frozen=True)
class Setting:
    """One policy with its settings, e.g. forecast(epsilon=0.05)."""

    family: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        inner = ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params
        )
        return f"{self.family}({inner})" if inner else self.family

    @property
    def main_value(self) -> Any:
        key = SWEEPS.get(self.family, ("", ()))[0]
        return dict(self.params).get(key)


def parse_settings(specs: Sequence[str]) -> list[Setting]:
    """ "forecast" (its sweep), "forecast:epsilon=0.05,hysteresis=3" (one setting), "none"."""
    out: list[Setting] = []
    for spec in specs:
        family, _, rest = spec.partition(":")
        if family not in SWEEPS:
            raise InvalidArgumentError(
                f"unknown replay policy {family!r}; choose from {', '.join(SWEEPS)}."
            )
        if rest:
            params = []
            for item in rest.split(","):
                key, eq, value = item.partition("=")
                if not eq:
                    raise InvalidArgumentError(f"policy setting {item!r} in {spec!r} is not k=v.")
                params.append((key.strip(), _number(value.strip())))
            out.append(Setting(family, tuple(params)))
            continue
        key, values = SWEEPS[family]
        out.extend(Setting(family, ((key, v),) if key else ()) for v in values)
    for s in out:  # validate our own policies' settings before any work starts
        if not s.family.startswith("optuna_") and s.family != "none":
            policies.create(s.family, dict(s.params))
    return out


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -- one task ----------------------------------------------------------------------------------


@dataclass
class _Run:
    logged: LoggedRun
    curve: Curve  # the whole run, with its budget (its last step) and planned schedule
    batches: list[int]  # number of points seen after each report
    record: StoredDecision | None = None
    cached: tuple[int, Prediction | None] | None = None
    reported: int = 0  # reports made
    done: bool = False
    stop_reason: str | None = None
    trial: Any = None

    seen: Curve | None = None  # what the service has been told so far

    def advance(self) -> None:
        """The next report."""
        self.reported += 1
        self.seen = self.curve.head(self.batches[self.reported - 1])

    @property
    def kept(self) -> float:
        return float(to_loss(self.seen.last_value, self.curve.direction))


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


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    run_ids: tuple[str, ...]
    settings: tuple[Setting, ...]
    parallel: int
    max_reports: int
    forecaster: str
    use_targets: bool
    bank: ModelBank | None  # the learned models (a worker process loads its own)


def _batches(n: int, max_reports: int) -> list[int]:
    if n <= max_reports:
        return list(range(1, n + 1))
    return [int(x) for x in np.unique(np.ceil(np.linspace(0, n, max_reports + 1)[1:]))]


def replay_task(job: _Job) -> list[TaskResult]:
    """Every setting on one task; forecasts are shared between settings (same prefix, same
    study history: same forecast)."""
    logged = [r for r in job.source.load(list(job.run_ids)) if len(r.steps)]
    if len(logged) < 1:
        return []
    memo: dict[tuple[str, int, str], Prediction | None] = {}
    return [_replay(job, logged, setting, memo) for setting in job.settings]


def _replay(
    job: _Job,
    logged: list[LoggedRun],
    setting: Setting,
    memo: dict[tuple[str, int, str], Prediction | None],
) -> TaskResult:
    direction = logged[0].direction
    target = logged[0].target if job.use_targets else None
    runs = [
        _Run(
            r,
            replace(r.curve(horizon=int(r.steps[-1])), target=target),
            _batches(len(r.steps), job.max_reports),
        )
        for r in logged
    ]
    budget = max(r.curve.horizon for r in runs)
    decide = _optuna_driver(setting, direction, budget) if setting.family in OPTUNA else None
    policy = None
    if decide is None and setting.family != "none":
        policy = policies.create(setting.family, dict(setting.params))
    study = f"{job.source.name}/{job.task}"

    histories: dict[str, StudyHistory] = {}

    def history() -> StudyHistory:
        # One history object per set of completed runs: it keeps the study fits made from it.
        done = [r for r in runs if r.done]
        key = history_key(study, ((r.logged.run_id, r.seen.last_step) for r in done))
        if key not in histories:
            histories[key] = StudyHistory(tuple(r.seen for r in done), key)
        return histories[key]

    def fit(run: _Run) -> Callable[[Curve], Prediction | None]:
        def fit_head(head: Curve) -> Prediction | None:
            model = models.create(job.forecaster, head, bank=job.bank)
            hist = history() if model.needs_history(head) else None
            key = (run.logged.run_id, len(head), hist.key if hist else "")
            if key not in memo:
                memo[key] = fit_forecast(job.forecaster, head, lambda: hist, study, job.bank)
            return memo[key]

        return fit_head

    def judge_run(run: _Run) -> str | None:
        others = [o for o in runs if o is not run and o.reported]
        incumbent = incumbent_of(
            direction,
            (
                Standing(
                    o.logged.run_id,
                    o.done,
                    False,
                    o.seen.last_value,
                    None if o.record is None else o.record.forecast_final,
                )
                for o in others
            ),
        )
        context = StudyContext(
            study, direction, budget, target, incumbent, Peers(lambda: [o.seen for o in others])
        )
        view = RunView(study, run.logged.run_id, run.seen)
        judged = judge(policy, view, context, run.record, run.cached, fit(run))  # type: ignore[arg-type]
        run.record = judged.record
        run.cached = (judged.record.fitted_points, judged.prediction)
        return judged.decision.reason.value if judged.decision.is_stop else None

    queue = list(runs)
    active: list[_Run] = []
    while queue or active:
        while queue and len(active) < job.parallel:
            run = queue.pop(0)
            active.append(run)
        for run in list(active):
            run.advance()
            finished = run.reported == len(run.batches)
            reason = None
            if decide is not None:
                reason = decide(run, finished)
            elif policy is not None:
                reason = judge_run(run)
            if reason is not None or finished:
                run.done = True
                # A verdict at the last point saves nothing: the run ran to its end.
                run.stop_reason = None if finished else reason
                active.remove(run)
    return _score(job, setting, runs)


def _score(job: _Job, setting: Setting, runs: list[_Run]) -> TaskResult:
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
    cut = [runs[i].stop_reason in CUT for i in order]
    given_up = tuple(
        float((r.kept - f) / max(abs(f), 1e-12))
        for r, f in zip(runs, finals, strict=True)
        if r.stop_reason == Reason.CONVERGED.value and math.isfinite(f) and math.isfinite(r.kept)
    )
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        if r.stop_reason:
            counts[r.stop_reason] += 1
    return TaskResult(
        job.source.name,
        job.task,
        setting,
        len(runs),
        used / full if full > 0 else 1.0,
        regret,
        not cut[0],
        not all(cut[:3]),
        given_up,
        tuple(sorted(counts.items())),
        tuple((r.logged.run_id, r.seen.last_step, r.stop_reason or "") for r in runs),
    )


# -- Optuna's pruners, driven through Optuna ---------------------------------------------------


def _optuna_driver(
    setting: Setting, direction: Direction, budget: int
) -> Callable[[_Run, bool], str | None]:
    """A decide(run, finished) that reports the run's new points to an Optuna trial and asks
    should_prune(); a pruned trial counts as cut, except PatientPruner's (early stopping)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = dict(setting.params)
    pruners = optuna.pruners
    if setting.family == "optuna_median":
        warmup = int(params.get("n_warmup_fraction", 0.1) * budget)
        pruner: Any = pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    elif setting.family == "optuna_sha":
        pruner = pruners.SuccessiveHalvingPruner(
            reduction_factor=int(params.get("reduction_factor", 4))
        )
    elif setting.family == "optuna_hyperband":
        pruner = pruners.HyperbandPruner(
            min_resource=1,
            max_resource=budget,
            reduction_factor=int(params.get("reduction_factor", 3)),
        )
    else:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8: we know
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner = pruners.PatientPruner(None, patience=int(params.get("patience", 5)))
    reason = "converged" if setting.family == "optuna_patient" else Reason.UNPROMISING.value
    study = optuna.create_study(
        direction="minimize" if direction is Direction.MIN else "maximize",
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def decide(run: _Run, finished: bool) -> str | None:
        if run.trial is None:
            run.trial = study.ask()
        start = run.batches[run.reported - 2] if run.reported > 1 else 0
        curve = run.curve
        for i in range(start, run.batches[run.reported - 1]):
            value = float(curve.values[i])
            run.trial.report(
                value if math.isfinite(value) else _worst(direction), int(curve.steps[i])
            )
        if finished:
            final = curve.last_value
            if math.isfinite(final):
                study.tell(run.trial, final)
            else:
                study.tell(run.trial, state=optuna.trial.TrialState.FAIL)
            return None
        if run.trial.should_prune():
            study.tell(run.trial, state=optuna.trial.TrialState.PRUNED)
            return reason
        return None

    return decide


def _worst(direction: Direction) -> float:
    return 1e300 if direction is Direction.MIN else -1e300


# -- the corpus --------------------------------------------------------------------------------


def _jobs(
    corpus: str | Path,
    source_names: Sequence[str] | None,
    settings: Sequence[Setting],
    max_runs_per_task: int,
    parallel: int,
    seed: int,
    max_reports: int,
    forecaster: str,
    use_targets: bool,
    bank: ModelBank | None,
) -> Iterator[_Job]:
    for source, task, _, chosen in sample_tasks(corpus, source_names, max_runs_per_task, seed):
        if chosen:
            yield _Job(
                source,
                str(task),
                tuple(chosen),
                tuple(settings),
                parallel,
                max_reports,
                forecaster,
                use_targets,
                bank,
            )


def replay_corpus(
    corpus: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    policy_specs: Sequence[str] = DEFAULT_POLICIES,
    max_runs_per_task: int = 30,
    parallel: int = 4,
    seed: int = 0,
    max_reports: int = 100,
    forecaster: str = "",
    use_targets: bool = False,
    workers: int | None = None,
    progress: bool = True,
    models_dir: str = "",
) -> list[TaskResult]:
    """Every policy setting on every task of the corpus; one TaskResult per (task, setting).

    models_dir: the learned models, as the service's setting ("": the shipped ones, "none":
    none); loaded only when the forecaster is "auto" or a learned one.

    The studies get the corpus targets only with use_targets: the figures measure how well a
    policy keeps the best run, which a study that wants a target (and stops every run that
    cannot reach it) does not aim at."""
    if parallel < 1:
        raise InvalidArgumentError(f"--parallel must be >= 1; got {parallel}.")
    if max_reports < 1:
        raise InvalidArgumentError(f"max_reports must be >= 1; got {max_reports}.")
    settings = parse_settings(policy_specs)
    name = models.check_name(forecaster)
    bank = ModelBank.load(models_dir) if name == models.AUTO or models.is_learned(name) else None
    jobs = list(
        _jobs(
            corpus,
            source_names,
            settings,
            max_runs_per_task,
            parallel,
            seed,
            max_reports,
            forecaster,
            use_targets,
            bank,
        )
    )
    out: list[TaskResult] = []
    for batch in run_jobs(replay_task, jobs, workers, progress, "replay"):
        out.extend(batch)
    return out


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
        overall.append(
            {
                "source": "all",
                "policy": setting.family,
                "params": dict(setting.params),
                "n_tasks": sum(r["n_tasks"] for r in per_source),
                **mean,
                "n_converged": sum(r["n_converged"] for r in per_source),
                "converged_given_up": float(np.mean(given)) if given else 0.0,
            }
        )
    return rows + overall


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
    }


_COLUMNS = (  # (header, key)
    ("source", "source"),
    ("policy", "policy"),
    ("params", "params"),
    ("tasks", "n_tasks"),
    ("compute", "compute_fraction"),
    ("rel_regret", "mean_rel_regret"),
    ("top1_kept", "top1_kept"),
    ("top3_kept", "top3_kept"),
    ("converged", "n_converged"),
    ("given_up", "converged_given_up"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of summarize()'s rows."""
    head = "| " + " | ".join(h for h, _ in _COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in _COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(row[k]) for _, k in _COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)


def plot(rows: Sequence[dict[str, Any]], path: str | Path, source: str = "all") -> Path:
    """The compute-vs-regret curve of each policy over its main parameter, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["source"] == source]
    if not mine:
        raise InvalidArgumentError(f"no replay results for source {source!r} to plot.")
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    families = sorted({r["policy"] for r in mine}, key=lambda f: list(SWEEPS).index(f))
    for family in families:
        key = SWEEPS[family][0]
        pts = sorted(
            (r for r in mine if r["policy"] == family), key=lambda r: r["compute_fraction"]
        )
        xs = [r["compute_fraction"] for r in pts]
        ys = [r["mean_rel_regret"] for r in pts]
        style = "-o" if not family.startswith("optuna_") else "--s"
        (line,) = ax.plot(xs, ys, style, label=family, markersize=4)
        for r, x, y in zip(pts, xs, ys, strict=True):
            if key and key in r["params"]:
                ax.annotate(_fmt(r["params"][key]), (x, y), fontsize=6, color=line.get_color(),
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.axvline(0.4, color="grey", lw=0.6, ls=":")
    ax.axhline(0.005, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("compute fraction (steps run / steps of running everything)")
    ax.set_ylabel("mean relative regret of the best result kept")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(f"Replay over the corpus ({source}): lower left is better")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
