"""A synchronous, fail-open view of one study: for callers that ask once per report and can
wait a few milliseconds for the answer (Optuna's pruner, Ray Tune's stopper), not training
loops (they use the Reporter).

After a failed call the service is left alone for a backoff period (0.5 s doubling to 30 s),
so a sweep with the service down pays for one failed call now and then, not one per report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.backoff import Backoff
from forecaster_client.connection import (
    Connection,
    Credentials,
    Warnings,
    WrongStudyError,
    describe,
    last_stored_step,
    to_struct,
)
from forecaster_client.decision import Decision, RankedRun
from forecaster_client.forecast import FinalForecast

log = logging.getLogger("forecaster_client")


class FailOpenStudy:
    """Runs of one study reported point by point; every call answers at once or gives up.
    (Not `forecaster_client.StudyClient`, which reads a service back as values: this one only
    feeds a pruner or a stopper, and never raises.)"""

    def __init__(
        self,
        address: str,
        spec: pb.StudySpec,
        *,
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 2.0,
    ) -> None:
        self.spec = spec
        self.conn = Connection(address, token=token, tls=tls, timeout_s=timeout_s)
        self.warnings = Warnings()
        self._last_step: dict[str, int] = {}  # runs started, with the last step sent
        self._finished: set[str] = set()
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff = Backoff()
        self.refused: str | None = None  # why the study refuses this client's runs, if it does

    def report(
        self,
        run: str,
        points: Sequence[tuple[int, float, float | None]],
        config: Mapping[str, Any] | None = None,
    ) -> Decision | None:
        """Sends the points after the run's last sent step; the decision, or None when the
        service could not be asked (fail-open: the caller continues)."""
        with self._lock:
            if self.refused or run in self._finished or time.monotonic() < self._retry_at:
                return None
            try:
                last = self._attach(run, config)
                try:
                    new = [_point(s, v, lr) for s, v, lr in points if s > last]
                except (TypeError, ValueError) as e:
                    self.warnings.once(
                        "bad-point", "forecaster: skipped points that are not numbers (%s)", e
                    )
                    return None
                if not new:
                    return self.conn.decision(self.spec.name, run)
                response = self.conn.report(self.spec.name, run, new)
                self._last_step[run] = response.last_step
                self._backoff.reset()
                return Decision.from_proto(response.decision)
            except WrongStudyError as e:
                self.refused = str(e)
                log.error("forecaster: %s; continuing without the service's decisions", e)
                return None
            except grpc.RpcError as e:
                self._failed(e, run)
                return None

    def final_forecast(self, run: str) -> FinalForecast | None:
        """The service's forecast of where the run ends; None when it cannot say now
        (fail-open, as report())."""
        with self._lock:
            if self.refused or run not in self._last_step or time.monotonic() < self._retry_at:
                return None
            try:
                summary = self.conn.run_summary(self.spec.name, run)
                return FinalForecast.from_summary(summary, self.spec.metric)
            except grpc.RpcError as e:
                self.warnings.once(
                    f"forecast-{e.code()}",
                    "forecaster: no forecast for run %r (%s)",
                    run,
                    describe(e),
                )
                return None

    def rank(self) -> list[RankedRun] | None:
        """The study's running and paused runs, best first (RankRuns); None when the service
        cannot say now (fail-open, as report())."""
        with self._lock:
            if self.refused or time.monotonic() < self._retry_at:
                return None
            try:
                return self.conn.rank(self.spec.name, 0)
            except grpc.RpcError as e:
                self.warnings.once(f"rank-{e.code()}", "forecaster: no ranking (%s)", describe(e))
                return None

    def finish(self, run: str, state: str) -> None:
        """Marks a run finished/stopped/failed once (quietly skipped while the service is away)."""
        with self._lock:
            if run in self._finished or run not in self._last_step:
                return
            try:
                self.conn.finish(self.spec.name, run, state)
                self._finished.add(run)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    self._finished.add(run)  # already finished
                else:
                    self._failed(e, run)

    def _attach(self, run: str, config: Mapping[str, Any] | None) -> int:
        if run not in self._last_step:
            spec = pb.RunSpec(name=run)
            struct = to_struct(config)
            if struct is not None:
                spec.config.CopyFrom(struct)
            stored = self.conn.attach(self.spec, spec, self.warnings)
            self._last_step[run] = last_stored_step(stored)
        return self._last_step[run]

    def _failed(self, error: grpc.RpcError, run: str) -> None:
        code = error.code()
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            self._finished.add(run)  # the run is finished: nothing more to send
            return
        if code == grpc.StatusCode.NOT_FOUND:
            self._last_step.pop(run, None)  # attach again: study and run
        self.warnings.once(
            f"fail-{code}",
            "forecaster: cannot ask the service at %s (%s); continuing without its decisions",
            self.conn.address,
            describe(error),
        )
        self._retry_at = time.monotonic() + self._backoff.next()

    def close(self) -> None:
        self.conn.close()


def _point(step: int, value: float, lr: float | None) -> pb.Point:
    point = pb.Point(step=int(step), value=float(value))
    if lr is not None:
        point.lr = float(lr)
    return point
