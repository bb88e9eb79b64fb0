"""`forecaster train`: the learned forecasters, from a corpus to versioned artifacts.

1. Tasks are split per source (corpus/splits.py): train, calib and test, never mixed.
2. Each sampled run is cut at several fractions of its final step; each cut is one example
   (features, normalised sequence, z at the final step and at a few later logged steps):
   `examples.py`, an `Examples` of named arrays per part.
3. gbm trains on the train tasks; sequence is pre-trained on synthetic curves
   (corpus/synthetic.py) and fine-tuned on the train tasks; the ensemble stacks gbm, sequence,
   power_law, pow3 and the schedule laws (fitted with each run's study history: the task's runs of
   the other fold) and calibrates its intervals on the calib tasks: `fit.py`.
4. Every model is scored on the test tasks; the figures go into each artifact's meta.json with
   the corpus fingerprint and the tasks it learned from: `report.py`.

`pipeline.train_all` runs the steps in this order.

Examples weigh each source the same, and each task the same within its source, so 35 lcbench
tasks of 2,000 runs do not drown three nanogpt tasks.
"""

from __future__ import annotations

from forecaster.training.examples import (
    EVAL_CUTOFFS,
    N_QUERIES,
    PARTS,
    Examples,
    build_examples,
)
from forecaster.training.pipeline import train_all
from forecaster.training.report import Metrics, Scores, fingerprint, format_metrics, heldout_metrics

__all__ = [
    "EVAL_CUTOFFS",
    "N_QUERIES",
    "PARTS",
    "Examples",
    "Metrics",
    "Scores",
    "build_examples",
    "fingerprint",
    "format_metrics",
    "heldout_metrics",
    "train_all",
]
