"""Optuna's pruners, driven through Optuna itself (ask, report, should_prune, tell; in-memory
storage), in the same schedule as the replay's own policies."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from forecaster.curves import Direction
from forecaster.evaluation.replay.settings import Setting
from forecaster.policies import Reason

if TYPE_CHECKING:
    from forecaster.evaluation.replay.simulate import _Run


def optuna_driver(
    setting: Setting, direction: Direction, budget: int, study_name: str
) -> Callable[[_Run, bool], Reason | None]:
    """A decide(run, finished) that reports the run's new points to an Optuna trial and asks
    should_prune(); a pruned trial counts as cut, except PatientPruner's (early stopping).

    The Optuna study is named after the task: HyperbandPruner puts a trial in a bracket by a
    hash of the study name and the trial number, so an unnamed study (a random name) would
    replay Hyperband differently every time."""
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
    reason = Reason.CONVERGED if setting.family == "optuna_patient" else Reason.UNPROMISING
    study = optuna.create_study(
        study_name=study_name,
        direction="minimize" if direction is Direction.MIN else "maximize",
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def decide(run: _Run, finished: bool) -> Reason | None:
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
