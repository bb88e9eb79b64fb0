"""The published peer: NNI's `CurvefittingAssessor` curve model (Domhan et al. 2015's 12
curve families, least squares per family, then an MCMC over their weights), as NNI 3.0 ships
it (`nni.algorithms.hpo.curvefitting_assessor.model_factory.CurveModel`). Benchmark-only:
`pip install nni==3.0` (not a dependency of forecaster).

How our curves are handed to it, since it reads a list of values at epochs 1, 2, ..., n and
only rising, accuracy-like values:

- steps: the prefix is read at m = min(n, 25) evenly spaced positions d, 2d, ..., md
  (d = last step / m, values interpolated linearly in the step), and the final step is
  position round(final / d): it is made for one value per epoch, and its cost grows with the
  number of values (pure-Python likelihood loops: 30 s per forecast at 200 points);
- a loss (direction min) is mapped to y = 1 - loss / ref, ref = the largest |value| of the
  prefix: rising as the loss falls, 1 at loss 0, and mapped back by loss = ref * (1 - y);
  accuracy-like values (direction max) go in as they are;
- it declines when CurveModel.predict returns None (fewer than 4 families agree), when its
  answer is not finite, or when the prefix has fewer than 3 finite points.

Its global state is reset before each forecast (the fitted parameters live in a module-level
dict in NNI, and the MCMC draws from numpy's global generator, seeded here), so each forecast
depends on its curve alone.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

MAX_POSITIONS = 25


@dataclass(frozen=True)
class PeerForecast:
    value: float  # NaN when it declined
    cpu_ms: float


def available() -> str:
    """The empty string when NNI's curve model imports, else why not."""
    try:
        from nni.algorithms.hpo.curvefitting_assessor import model_factory  # noqa: F401
    except Exception as e:  # ImportError, or NNI failing at import on this platform
        return f"{type(e).__name__}: {e}"
    return ""


def version() -> str:
    import nni

    return str(getattr(nni, "__version__", "?"))


class NniCurvePeer:
    """forecast(steps, values, minimize, final_step) -> PeerForecast."""

    def __init__(self) -> None:
        from nni.algorithms.hpo.curvefitting_assessor import curvefunctions, model_factory

        logging.getLogger("curvefitting_Assessor").setLevel(logging.CRITICAL + 1)
        self._functions = curvefunctions
        self._factory = model_factory
        self._initial = copy.deepcopy(curvefunctions.model_para)

    def _reset(self) -> None:
        for name, params in copy.deepcopy(self._initial).items():
            self._functions.model_para[name] = params
        np.random.seed(0)

    def forecast(
        self, steps: np.ndarray, values: np.ndarray, minimize: bool, final_step: int
    ) -> PeerForecast:
        t0 = time.process_time()
        value = self._predict(steps, values, minimize, final_step)
        return PeerForecast(value, (time.process_time() - t0) * 1e3)

    def _predict(
        self, steps: np.ndarray, values: np.ndarray, minimize: bool, final_step: int
    ) -> float:
        ok = np.isfinite(values)
        steps, values = np.asarray(steps, float)[ok], np.asarray(values, float)[ok]
        n = min(len(values), MAX_POSITIONS)
        if n < 3 or steps[-1] <= 0:
            return math.nan
        spacing = steps[-1] / n
        grid = spacing * np.arange(1, n + 1)
        y = np.interp(grid, steps, values)
        ref = float(np.max(np.abs(values))) if minimize else 1.0
        if minimize:
            if ref <= 0:
                return math.nan
            y = 1.0 - y / ref
        target = max(n + 1, int(round(final_step / spacing)))
        self._reset()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                answer = self._factory.CurveModel(target).predict([float(v) for v in y])
            except Exception:  # a numerical failure inside NNI: it gives no answer
                return math.nan
        if answer is None or not np.isfinite(answer):
            return math.nan
        return float(ref * (1.0 - answer)) if minimize else float(answer)
