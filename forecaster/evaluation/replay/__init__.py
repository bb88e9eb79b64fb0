"""Replay: each task of a corpus as a study, run under a stopping policy, as the service sees it.

Runs arrive in a seeded random order, `parallel` at a time. Each running run reports its next
batch of points (a run reports at most `max_reports` times, as a plugin batching its points
would), in turn; after each report the policy decides through `judging.judge`, the same path
the service takes (same refit schedule, same stop votes, same incumbent, peers and study
history). A stopped run's result is its value at the step it stopped: that is what the user
keeps. Optuna's pruners run in the same schedule, driven through Optuna itself.

- settings.py: the policy settings (`Setting`, `parse_settings`, the default sweeps)
- simulate.py: a task replayed through judge (`replay_task`), and the corpus (`replay_corpus`)
- optuna_driver.py: Optuna's pruners through Optuna
- score.py: one task's figures (`TaskResult`) and their summary per source and setting
- report.py: the markdown table and the compute-vs-regret plot
"""

from forecaster.evaluation.replay.report import _fmt, format_table, plot
from forecaster.evaluation.replay.score import CUT, TaskResult, summarize
from forecaster.evaluation.replay.settings import (
    DEFAULT_POLICIES,
    OPTUNA,
    SWEEPS,
    Setting,
    parse_settings,
)
from forecaster.evaluation.replay.simulate import _Job, replay_corpus, replay_task

__all__ = [
    "CUT",
    "DEFAULT_POLICIES",
    "OPTUNA",
    "SWEEPS",
    "Setting",
    "TaskResult",
    "_Job",
    "_fmt",
    "format_table",
    "parse_settings",
    "plot",
    "replay_corpus",
    "replay_task",
    "summarize",
]
