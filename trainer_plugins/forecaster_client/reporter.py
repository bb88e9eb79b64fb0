"""Reporter: what a training job holds. report() costs microseconds and never waits on the network.

The training thread only appends to a bounded in-memory queue (the Outbox it shares with the
sender) and reads the latest decision from it. The sender (sender.py), on a background thread,
attaches to the service, sends the queue in batches and keeps that decision up to date.

Fail-open: with the service down, slow or refusing, training goes on, one warning is logged
per kind of problem, and the sender retries with exponential backoff. When the queue is full
the OLDEST queued point is dropped (the recent points are the ones a decision rests on);
``dropped`` counts them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import grpc

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.connection import (
    Connection,
    Credentials,
    ScheduleSource,
    Warnings,
    describe,
    plan_of,
    state_of,
    study_spec,
    to_struct,
)
from forecaster_client.decision import Decision, RankedRun
from forecaster_client.distributed import RankGroup
from forecaster_client.forecast import FinalForecast, ForecastWatch
from forecaster_client.sender import Outbox, Sender

__all__ = ["Reporter", "ScheduleSource"]


class Reporter:
    """Reports one run's learning curve and holds the service's latest decision about it.

    Args:
        address: "host:port" of the forecaster service.
        study: the study's name; it is created if missing (with ``metric``, ``direction``,
            ``max_step``, ``target``, ``policy``, ``forecaster``, ``metric_kind``,
            ``metric_lower``, ``metric_upper``), joined as it is otherwise.
        run: the run's name, unique in the study. A re-started job that uses the same name
            re-attaches to its run; points at or before the run's last stored step are skipped.
        config: hyper-parameters, stored with the run (JSON-like values).
        max_step: the run's budget in steps (0: the study's).
        lr_schedule: the planned learning-rate schedule: an LrSchedule message, a mapping of
            its fields ({"kind": "cosine", "peak_lr": 3e-4, "total_steps": 10_000}), or a
            callable returning one (called on the background thread).
        token: bearer token when the service requires one (a line of its tokens_file, or its
            FORECASTER_AUTH_TOKEN); a tenant's token reaches only that tenant's studies.
        tls: True for TLS with the system roots, a PEM file of root certificates (a private
            CA), or your grpc.ChannelCredentials (connection.tls_credentials for mutual TLS).
        queue_size: points held while the service is unreachable; beyond it the oldest drop.
        batch_size: points per message at most.
        flush_interval_s: how often queued points are sent.
        timeout_s: deadline of each call to the service.
        stream: send over StreamMetrics (False: one ReportMetrics call per batch).
        distributed: under torch.distributed, only rank 0 talks to the service and
            should_stop() broadcasts its decision. None: detect an initialized process group.
        sync_every: under torch.distributed, should_stop() broadcasts on every sync_every-th
            call only (a broadcast costs a device sync under NCCL) and repeats the last answer
            in between. Every rank must call should_stop() equally often.
        forecast_every_s: forecast() and summary() ask the service for a new forecast at
            most this often (on a background thread).
        metric_kind: what kind of number the metric is ("loss", "accuracy", "probability",
            "win_rate", "error_rate", "perplexity", "unbounded"); "" lets the service infer it
            from ``metric`` and ``direction``. Its natural bounds bound every forecast.
        metric_lower, metric_upper: explicit bounds of the metric (None: the kind's).
    """

    def __init__(
        self,
        address: str,
        study: str,
        run: str,
        *,
        metric: str = "loss",
        direction: str = "minimize",
        config: Mapping[str, Any] | None = None,
        max_step: int = 0,
        lr_schedule: ScheduleSource = None,
        target: float | None = None,
        policy: str = "",
        policy_params: Mapping[str, Any] | None = None,
        forecaster: str = "",
        token: str | None = None,
        tls: Credentials = False,
        queue_size: int = 100_000,
        batch_size: int = 1_000,
        flush_interval_s: float = 0.5,
        timeout_s: float = 5.0,
        stream: bool = True,
        distributed: bool | None = None,
        sync_every: int = 1,
        forecast_every_s: float = 10.0,
        metric_kind: str = "",
        metric_lower: float | None = None,
        metric_upper: float | None = None,
    ) -> None:
        if not run:
            raise ValueError("run must be a non-empty name, unique within the study")
        if queue_size < 1 or batch_size < 1 or sync_every < 1:
            raise ValueError("queue_size, batch_size and sync_every must be at least 1")
        self.address = address
        self.study = study
        self.run = run
        self.metric = metric
        spec = study_spec(
            study,
            metric=metric,
            direction=direction,
            max_step=max_step,
            target=target,
            policy=policy,
            policy_params=policy_params,
            forecaster=forecaster,
            metric_kind=metric_kind,
            metric_lower=metric_lower,
            metric_upper=metric_upper,
        )
        run_spec = pb.RunSpec(name=run, max_step=int(max_step or 0))
        struct = to_struct(config)
        if struct is not None:
            run_spec.config.CopyFrom(struct)
        schedule = plan_of(lr_schedule)
        self._outbox = Outbox(queue_size, batch_size)
        self._sync_every = sync_every
        self._calls = 0
        self._agreed_stop = False
        self._t0 = time.monotonic()
        self.warnings = Warnings()

        self._group = RankGroup.detect() if distributed is not False else None
        if distributed and self._group is None:
            raise ValueError(
                "distributed=True but torch.distributed has no initialized process group with "
                "more than one process: call torch.distributed.init_process_group() first"
            )
        # Only rank 0 (or the only process) talks to the service.
        self._active = self._group is None or self._group.rank == 0
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        if self._active:
            self._conn = Connection(address, token=token, tls=tls, timeout_s=timeout_s)
            sender = Sender(
                self._conn,
                self._outbox,
                study_spec=spec,
                run_spec=run_spec,
                schedule=schedule,
                stream=stream,
                flush_interval_s=flush_interval_s,
                warnings=self.warnings,
            )
            self._thread = threading.Thread(
                target=sender.run, name=f"forecaster-reporter[{run}]", daemon=True
            )
            self._thread.start()
        self._forecasts = ForecastWatch(self._fetch_forecast, forecast_every_s)

    # -- the training thread ----------------------------------------------------------------

    def report(self, step: int, value: Any, lr: Any = None) -> None:
        """Queues one point and returns at once. NaN and inf are reported as they are: they
        are the divergence signal. A tensor is read on the background thread (no device sync
        here); ``step`` must grow from call to call (a point that does not is skipped)."""
        if not self._active or self._outbox.refused:
            return
        if hasattr(value, "detach"):
            value = value.detach()  # hold no autograd graph while queued
        if lr is not None and hasattr(lr, "detach"):
            lr = lr.detach()
        self._outbox.put((step, value, lr, time.monotonic() - self._t0))

    def should_stop(self) -> bool:
        """The latest decision says stop. Never waits on the service; under torch.distributed
        it is a collective (rank 0's answer on every rank, so all stop at the same step)."""
        if self._group is None:
            return self._outbox.decision.stop
        self._calls += 1
        if self._calls % self._sync_every == 0:
            action, reason = self._group.broadcast(self._outbox.decision.codes())
            if self._group.rank != 0:  # no sender here: the decision is rank 0's
                self._outbox.decision = Decision.from_codes(action, reason)
            self._agreed_stop = action == pb.ACTION_STOP
        return self._agreed_stop

    def should_pause(self) -> bool:
        """The latest decision says pause: save a checkpoint and stop for now; the run stays
        running, and a scheduler resumes it when the study's ranking (rank()) puts it first.
        Never waits on the service; under torch.distributed call it after should_stop(),
        whose broadcast it reads."""
        return self._outbox.decision.pause

    def rank(self, limit: int = 0) -> list[RankedRun]:
        """The study's running and paused runs, the one whose rest buys most per unit of
        compute first (RankRuns); asks now. Empty, with one warning, when the service cannot
        say (or off rank 0): a training job never fails on it."""
        if not self._active or self._conn is None:
            return []
        try:
            return self._conn.rank(self.study, limit)
        except grpc.RpcError as e:
            self.warnings.once(f"rank-{e.code()}", "forecaster: no ranking (%s)", describe(e))
            return []

    @property
    def decision(self) -> Decision:
        """The latest decision (reason, explanation, probabilities) as this process knows it."""
        return self._outbox.decision

    def forecast(self, wait_s: float = 0.0) -> FinalForecast | None:
        """The latest forecast of the run's final metric (median, 90% interval, P(beat the
        incumbent)) with its decision; None until the service has made one (or off rank 0).
        Never waits on the network unless wait_s > 0 (then it asks now and waits up to
        wait_s for the answer): a newer one is fetched in the background at most every
        forecast_every_s."""
        if not self._active or self._conn is None:
            return None
        return self._forecasts.latest(wait_s)

    def summary(self, wait_s: float = 0.0) -> str:
        """One line for the training printout:
        "final loss 2.31 [2.27, 2.36] at step 10k; continue: P(beat 2.35) = 0.81"."""
        forecast = self.forecast(wait_s)
        if forecast is not None:
            return forecast.line()
        d = self.decision
        return f"final {self.metric}: no forecast yet; {d.action} ({d.reason})"

    def _fetch_forecast(self) -> FinalForecast | None:
        if self._conn is None:
            return None
        summary = self._conn.run_summary(self.study, self.run)
        return FinalForecast.from_summary(summary, self.metric)

    @property
    def dropped(self) -> int:
        """Points dropped, oldest first, while the queue was full."""
        return self._outbox.dropped

    def set_lr_schedule(self, schedule: ScheduleSource) -> None:
        """Replaces the planned schedule; it travels with the next batch."""
        if self._active and schedule is not None:
            self._outbox.new_schedule = plan_of(schedule)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until everything reported so far is stored by the service (and the decision
        is up to date with it); False when that did not happen within timeout_s."""
        out = self._outbox
        if out.refused or self._thread is None or not self._thread.is_alive():
            return not out.points
        done = out.flushed()
        return done.wait(timeout_s) and not out.refused and not out.points

    def close(self, timeout_s: float = 10.0, state: str | None = "auto") -> None:
        """Sends what is queued (waiting at most timeout_s), then marks the run finished.

        state: "finished", "stopped", "failed"; "auto" is "stopped" when the service cut the
        run short, running when it paused it (to be resumed) and "finished" otherwise; None
        leaves the run running (a job that will resume).
        """
        out = self._outbox
        if self._thread is None or self._conn is None or out.closing.is_set():
            return
        if state == "auto":
            state = None if out.decision.pause else out.decision.final_state
        if state is not None:
            state_of(state)  # a wrong name is the caller's bug: say so now
        out.final_state = state
        out.closing.set()
        out.hurry()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.warnings.once(
                "close-timeout",
                "forecaster: could not send the last %d points to %s within %.1f s; "
                "giving up on them",
                len(out.points),
                self.address,
                timeout_s,
            )
            out.abandoned = True
            out.hurry()
        else:
            self._conn.close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # On an exception the run is left running: a pre-empted job re-attaches when it resumes.
        self.close(state="auto" if exc_type is None else None)
