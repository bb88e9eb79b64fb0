"""The forecast of a run's final metric as a training job shows it: in its printout
(`Reporter.summary()`) and in its own logger (the framework callbacks).

Plain floats, no numpy: the Reporter stays as light as it is. `StudyClient.forecast()` gives
the whole distribution as arrays.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.decision import Decision


def _optional(message: object, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FinalForecast:
    """Where the run is forecast to end: the median and the 90% interval of the metric at
    the budget, P(beating the study's incumbent), and the decision made on it."""

    metric: str
    at_step: int  # the budget the forecast is for
    median: float
    low: float  # 5% quantile
    high: float  # 95% quantile
    observed_until_step: int
    model: str
    decision: Decision
    prob_beat_incumbent: float | None = None
    incumbent: float | None = None
    prob_reach_target: float | None = None

    @classmethod
    def from_summary(cls, summary: pb.RunSummary, metric: str) -> FinalForecast | None:
        """From the service's RunSummary; None when it holds no forecast (a finished run,
        no points yet, no budget)."""
        f = summary.forecast
        if not summary.HasField("forecast") or not f.steps or not f.quantiles:
            return None
        levels = list(f.quantile_levels)
        row = list(f.quantiles[-1].values)

        def at(level: float) -> float:
            return row[min(range(len(levels)), key=lambda i: abs(levels[i] - level))]

        decision = Decision.from_proto(summary.decision) if summary.HasField("decision") else None
        return cls(
            metric=metric,
            at_step=int(f.steps[-1]),
            median=at(0.5),
            low=at(0.05),
            high=at(0.95),
            observed_until_step=int(f.observed_until_step),
            model=f.model,
            decision=decision or Decision(),
            prob_beat_incumbent=_optional(summary, "prob_beat_incumbent"),
            incumbent=_optional(summary, "incumbent"),
            prob_reach_target=_optional(f, "prob_reach_target"),
        )

    def metrics(self, prefix: str = "forecast/") -> dict[str, float]:
        """What a callback logs: the forecast's numbers and the decision as 0/1, by name."""
        out = {
            f"{prefix}final_median": self.median,
            f"{prefix}final_q05": self.low,
            f"{prefix}final_q95": self.high,
            f"{prefix}stop": 1.0 if self.decision.stop else 0.0,
        }
        if self.prob_beat_incumbent is not None:
            out[f"{prefix}p_beat_incumbent"] = self.prob_beat_incumbent
        if self.prob_reach_target is not None:
            out[f"{prefix}p_reach_target"] = self.prob_reach_target
        return out

    def line(self) -> str:
        """ "final loss 2.31 [2.27, 2.36] at step 10k; continue: P(beat 2.35) = 0.81" """
        d = self.decision
        head = (
            f"final {self.metric} {_g(self.median)} [{_g(self.low)}, {_g(self.high)}] at step "
            f"{_steps(self.at_step)}; {d.action}"
        )
        if d.stop or d.reason not in ("promising", "unknown"):
            head += f" ({d.reason})"
        if self.prob_beat_incumbent is not None and self.incumbent is not None:
            return f"{head}: P(beat {_g(self.incumbent)}) = {self.prob_beat_incumbent:.2f}"
        if self.prob_reach_target is not None:
            return f"{head}: P(reach target) = {self.prob_reach_target:.2f}"
        return head


def _g(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def _steps(step: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if step >= size:
            return f"{step / size:.3g}{unit}"
    return str(step)


class ForecastWatch:
    """The latest forecast, fetched on a background thread at most every `every_s`: reading
    it never waits on the network (a training printout must not)."""

    def __init__(self, fetch: Callable[[], FinalForecast | None], every_s: float) -> None:
        self._fetch = fetch
        self._every_s = every_s
        self._lock = threading.Lock()
        self._latest: FinalForecast | None = None
        self._asked_at: float | None = None
        self._done = threading.Event()
        self._done.set()

    def latest(self, wait_s: float = 0.0) -> FinalForecast | None:
        """The newest forecast known; starts a fetch when the last one is older than every_s.
        wait_s > 0 asks now (after any fetch in flight) and waits up to wait_s for it."""
        now = time.monotonic()
        if wait_s > 0 and not self._done.wait(wait_s):
            return self._latest
        with self._lock:
            due = wait_s > 0 or self._asked_at is None or now - self._asked_at >= self._every_s
            if due and self._done.is_set():
                self._asked_at = now
                self._done.clear()
                threading.Thread(target=self._run, name="forecaster-forecast", daemon=True).start()
        if wait_s > 0:
            self._done.wait(wait_s)
        return self._latest

    def _run(self) -> None:
        try:
            value = self._fetch()
            if value is not None:
                self._latest = value
        except Exception:  # the service down or refusing: keep the last one, try again later
            pass
        finally:
            self._done.set()
