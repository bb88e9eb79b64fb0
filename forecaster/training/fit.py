"""The learned forecasters trained from example sets: gbm, sequence and the ensemble."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from forecaster.curves import FloatArray
from forecaster.training.examples import Examples

if TYPE_CHECKING:
    from forecaster.models.ensemble import EnsembleForecaster
    from forecaster.models.gbm import GbmForecaster
    from forecaster.models.sequence import SeqData, SequenceForecaster

Say = Callable[[str], None]

TRAIN_THREADS = 2  # fixed, so that a result does not depend on the machine's core count


@contextmanager
def reproducible(threads: int = TRAIN_THREADS) -> Iterator[None]:
    """Training as a function of its arguments and seed: torch's deterministic algorithms and a
    fixed number of threads (its own and BLAS's) while it runs; the previous state after.
    LightGBM is made deterministic by its parameters (models/gbm.py) and every random choice
    is seeded."""
    import torch
    from threadpoolctl import threadpool_limits

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)


def fit_gbm(train: Examples, *, rounds: int, seed: int, say: Say) -> GbmForecaster:
    """gbm's quantile boosters on the train examples' features and z at the final step."""
    from forecaster.models import gbm

    say("training gbm")
    return gbm.train(
        train.x,
        train.z,
        train.weight,
        rounds=rounds,
        threads=TRAIN_THREADS,
        seed=seed,
        progress=say,
    )


def fit_sequence(
    prior: Examples,
    train: Examples,
    *,
    pretrain_epochs: int,
    finetune_epochs: int,
    seed: int,
    say: Say,
) -> SequenceForecaster:
    """sequence pre-trained on the synthetic prior, then fine-tuned on the train examples (its
    input scaling fitted on both, so that features the prior never has are scaled too)."""
    from forecaster.models import sequence

    say(f"pre-training sequence on {len(prior)} synthetic examples")
    pretrained = sequence.train(
        _seq_data(prior),
        epochs=pretrain_epochs,
        seed=seed,
        normalise_on=np.concatenate([prior.x, train.x]),
        threads=TRAIN_THREADS,
        progress=say,
    )
    say(f"fine-tuning sequence on {len(train)} corpus examples")
    return sequence.train(
        _seq_data(train),
        net=pretrained.net,
        epochs=finetune_epochs,
        lr=1e-3,
        seed=seed,
        threads=TRAIN_THREADS,
        progress=say,
    )


def fit_ensemble(
    gbm_model: GbmForecaster, seq_model: SequenceForecaster, calib: Examples, *, say: Say
) -> EnsembleForecaster:
    """The ensemble of the trained members, stacked and calibrated on the calib examples."""
    from forecaster.models import ensemble

    say("stacking and calibrating the ensemble")
    stacking = ensemble.fit_stack(
        member_quantiles(gbm_model, seq_model, calib),
        calib.z,
        calib.progress,
        calib.weight,
        calib.sched,
        calib.task,
    )
    return ensemble.EnsembleForecaster(gbm_model, seq_model, stacking)


def member_quantiles(
    gbm_model: GbmForecaster, seq_model: SequenceForecaster, ex: Examples
) -> FloatArray:
    """(n, K, L): each ensemble member's quantiles of z at the budget for the examples."""
    from forecaster.models import ensemble

    return ensemble.member_quantiles(gbm_model, seq_model, ex.x, ex.seq, ex.queries[:, :1], ex.par)


def _seq_data(ex: Examples) -> SeqData:
    from forecaster.models.sequence import SeqData

    return SeqData(ex.seq, ex.x, ex.queries, ex.zq, ex.weight)
