"""Reporter: what a training job holds. report() costs microseconds and never waits on the network.

The training thread only appends to a bounded in-memory queue. A background thread attaches
to the service (creates the study and the run, or re-attaches to them), sends the queue in
batches over one StreamMetrics stream (or ReportMetrics calls where streaming is refused) and
keeps the latest decision, which should_stop() reads without waiting.

Fail-open: with the service down, slow or refusing, training goes on, one warning is logged
per kind of problem, and the sender retries with exponential backoff. When the queue is full
the OLDEST queued point is dropped (the recent points are the ones a decision rests on);
``dropped`` counts them.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.connection import (
    Connection,
    Credentials,
    Warnings,
    describe,
    last_stored_step,
    lr_schedule_of,
    state_of,
    study_spec,
    to_struct,
)
from forecaster_client.decision import Decision
from forecaster_client.distributed import RankGroup

log = logging.getLogger("forecaster_client")

ScheduleSource = pb.LrSchedule | Mapping[str, Any] | Callable[[], pb.LrSchedule | None] | None

# A stream is closed and re-opened after this many batches: its clean end confirms that the
# service stored everything sent on it, so at most this much is re-sent after a failure.
_STREAM_BATCHES = 50
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0
# The run is finished: nothing sent again will be taken. (NOT_FOUND re-attaches instead.)
_FATAL = {grpc.StatusCode.FAILED_PRECONDITION}
_AUTH = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class Reporter:
    """Reports one run's learning curve and holds the service's latest decision about it.

    Args:
        address: "host:port" of the forecaster service.
        study: the study's name; it is created if missing (with ``metric``, ``direction``,
            ``max_step``, ``target``, ``policy``, ``forecaster``), joined as it is otherwise.
        run: the run's name, unique in the study. A re-started job that uses the same name
            re-attaches to its run; points at or before the run's last stored step are skipped.
        config: hyper-parameters, stored with the run (JSON-like values).
        max_step: the run's budget in steps (0: the study's).
        lr_schedule: the planned learning-rate schedule: an LrSchedule message, a mapping of
            its fields ({"kind": "cosine", "peak_lr": 3e-4, "total_steps": 10_000}), or a
            callable returning one (called on the background thread).
        token: bearer token when the service requires one (FORECASTER_AUTH_TOKEN there).
        tls: True for TLS with the system roots, or your grpc.ChannelCredentials.
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
    ) -> None:
        if not run:
            raise ValueError("run must be a non-empty name, unique within the study")
        if queue_size < 1 or batch_size < 1 or sync_every < 1:
            raise ValueError("queue_size, batch_size and sync_every must be at least 1")
        self.address = address
        self.study = study
        self.run = run
        self.dropped = 0
        self._study_spec = study_spec(
            study,
            metric=metric,
            direction=direction,
            max_step=max_step,
            target=target,
            policy=policy,
            policy_params=policy_params,
            forecaster=forecaster,
        )
        self._run_spec = pb.RunSpec(name=run, max_step=int(max_step or 0))
        struct = to_struct(config)
        if struct is not None:
            self._run_spec.config.CopyFrom(struct)
        self._schedule_source: ScheduleSource = (
            lr_schedule if callable(lr_schedule) else lr_schedule_of(lr_schedule)
        )
        self._new_schedule: pb.LrSchedule | None = None
        self._decision = Decision()
        self._queue: deque[tuple[Any, Any, Any, float]] = deque(maxlen=queue_size)
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._timeout_s = timeout_s
        self._use_stream = stream
        self._sync_every = sync_every
        self._calls = 0
        self._agreed_stop = False
        self._final_state: str | None = None
        self._t0 = time.monotonic()
        # _wake: a full batch is waiting (report() sets it, once per batch). _urgent: close()
        # or flush() is waiting; only it cuts a backoff short, so that a job reporting into
        # an unreachable service does not make the sender spin.
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._closing = threading.Event()
        self._abandon = False
        self._flush_waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
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
        if self._active:
            self._conn = Connection(address, token=token, tls=tls, timeout_s=timeout_s)
            self._thread = threading.Thread(
                target=self._send_loop, name=f"forecaster-reporter[{run}]", daemon=True
            )
            self._thread.start()

    # -- the training thread ----------------------------------------------------------------

    def report(self, step: int, value: Any, lr: Any = None) -> None:
        """Queues one point and returns at once. NaN and inf are reported as they are: they
        are the divergence signal. A tensor is read on the background thread (no device sync
        here); ``step`` must grow from call to call (a point that does not is skipped)."""
        if not self._active:
            return
        if hasattr(value, "detach"):
            value = value.detach()  # hold no autograd graph while queued
        if lr is not None and hasattr(lr, "detach"):
            lr = lr.detach()
        q = self._queue
        if len(q) == self._queue_size:
            self.dropped += 1
        q.append((step, value, lr, time.monotonic() - self._t0))
        if len(q) == self._batch_size:
            self._wake.set()

    def should_stop(self) -> bool:
        """The latest decision says stop. Never waits on the service; under torch.distributed
        it is a collective (rank 0's answer on every rank, so all stop at the same step)."""
        if self._group is None:
            return self._decision.stop
        self._calls += 1
        if self._calls % self._sync_every == 0:
            action, reason = self._group.broadcast(self._decision.codes())
            if self._group.rank != 0:
                self._decision = Decision.from_codes(action, reason)
            self._agreed_stop = action == pb.ACTION_STOP
        return self._agreed_stop

    @property
    def decision(self) -> Decision:
        """The latest decision (reason, explanation, probabilities) as this process knows it."""
        return self._decision

    def set_lr_schedule(self, schedule: ScheduleSource) -> None:
        """Replaces the planned schedule; it travels with the next batch."""
        if self._active and schedule is not None:
            self._new_schedule = schedule if callable(schedule) else lr_schedule_of(schedule)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until everything reported so far is stored by the service (and the decision
        is up to date with it); False when that did not happen within timeout_s."""
        if not self._active or self._thread is None or not self._thread.is_alive():
            return not self._queue
        done = threading.Event()
        with self._waiters_lock:
            self._flush_waiters.append(done)
        self._urgent.set()
        self._wake.set()
        return done.wait(timeout_s) and self._active and not self._queue

    def close(self, timeout_s: float = 10.0, state: str | None = "auto") -> None:
        """Sends what is queued (waiting at most timeout_s), then marks the run finished.

        state: "finished", "stopped", "failed"; "auto" is "stopped" when the service cut the
        run short and "finished" otherwise; None leaves the run running (a job that will resume).
        """
        if self._thread is None or self._closing.is_set():
            return
        if state == "auto":
            state = self._decision.final_state
        if state is not None:
            state_of(state)  # a wrong name is the caller's bug: say so now
        self._final_state = state
        self._closing.set()
        self._urgent.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.warnings.once(
                "close-timeout",
                "forecaster: could not send the last %d points to %s within %.1f s; "
                "giving up on them",
                len(self._queue),
                self.address,
                timeout_s,
            )
            self._abandon = True
            self._urgent.set()
            self._wake.set()
        else:
            self._conn.close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # On an exception the run is left running: a pre-empted job re-attaches when it resumes.
        self.close(state="auto" if exc_type is None else None)

    # -- the background thread --------------------------------------------------------------

    def _send_loop(self) -> None:
        sender = _Sender(self)
        delay = 0.0
        while not self._abandon:
            if delay:  # backing off: only close() or flush() cuts it short
                self._urgent.wait(min(delay, 0.2) if self._closing.is_set() else delay)
            elif not self._closing.is_set():
                self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            self._urgent.clear()
            if self._abandon:
                break
            # Read before draining: what was reported before close() is in the queue by now.
            closing = self._closing.is_set()
            with self._waiters_lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            try:
                sender.drain(confirm=bool(waiters) or closing)
            except grpc.RpcError as e:
                with self._waiters_lock:
                    self._flush_waiters[:0] = waiters
                delay = sender.failed(e)
                if sender.refused:
                    break
                continue
            delay = 0.0
            sender.backoff_s = _BACKOFF_START_S
            for w in waiters:
                w.set()
            if closing:
                sender.finish_run(self._final_state)
                break
        sender.shutdown()
        with self._waiters_lock:  # nobody waits on a thread that has ended
            for w in self._flush_waiters:
                w.set()


class _Sender:
    """The background thread's state: attachment, stream, points sent but not yet confirmed."""

    def __init__(self, reporter: Reporter) -> None:
        self.r = reporter
        self.conn = reporter._conn
        self.attached = False
        self.last_step: int | None = None  # the last step the service has (or will have)
        self.stream: _Stream | None = None
        self.streaming = reporter._use_stream
        self.unconfirmed: list[pb.Point] = []
        self.resend: list[pb.Point] = []
        self.backoff_s = _BACKOFF_START_S
        self.refused = False
        self.failures = 0

    # attach --------------------------------------------------------------------------------

    def attach(self) -> None:
        r = self.r
        source = r._schedule_source
        if callable(source):
            r._schedule_source = source = self._planned(source)
        spec = r._run_spec
        if source is not None:
            spec = pb.RunSpec()
            spec.CopyFrom(r._run_spec)
            spec.lr_schedule.CopyFrom(source)
        run = self.conn.attach(r._study_spec, spec, r.warnings)
        if run.state != pb.RUN_STATE_RUNNING:
            raise _ClientError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {r.run!r} of study {r.study!r} is already "
                f"{pb.RunState.Name(run.state).removeprefix('RUN_STATE_').lower()}: "
                "it accepts no more points; report under a new run name",
            )
        stored = last_stored_step(run)
        self.last_step = stored if self.last_step is None else max(self.last_step, stored)
        # After a failure: what the service did not store goes again.
        self.resend = [p for p in self.unconfirmed + self.resend if p.step > stored]
        self.unconfirmed = []
        if self.failures:
            log.info("forecaster: reporting to %s again", self.conn.address)
        self.attached = True

    def _planned(self, source: Callable[[], pb.LrSchedule | None]) -> pb.LrSchedule | None:
        try:
            return lr_schedule_of(source())
        except Exception as e:  # a schedule we cannot read must not cost the run
            self.r.warnings.once(
                "schedule", "forecaster: could not read the planned lr schedule (%s)", e
            )
            return None

    # send ----------------------------------------------------------------------------------

    def drain(self, confirm: bool) -> None:
        """Sends everything queued; with confirm, also waits until the service stored it."""
        if not self.attached:
            self.attach()
        while True:
            points = self.resend[: self.r._batch_size]
            del self.resend[: len(points)]
            if len(points) < self.r._batch_size:
                points += self._take(self.r._batch_size - len(points))
            if not points:
                break
            self._send(points)
        if confirm and self.stream is not None:
            self._end_stream()
            # The stream answers only when the action or reason changes: read the decision
            # about the last point, with its current explanation and probabilities.
            response = self.conn.stub.GetDecision(
                pb.GetDecisionRequest(study=self.r.study, run=self.r.run),
                timeout=self.conn.timeout_s,
                metadata=self.conn.metadata,
            )
            self.r._decision = Decision.from_proto(response.decision)

    def _take(self, n: int) -> list[pb.Point]:
        """Up to n queued points as messages, in increasing step order."""
        q = self.r._queue
        out: list[pb.Point] = []
        last = self.last_step if self.last_step is not None else -1
        while len(out) < n:
            try:
                step, value, lr, wall = q.popleft()
            except IndexError:
                break
            try:
                step = int(step)
                point = pb.Point(step=step, value=_float(value), wall_time_s=wall)
                if lr is not None:
                    lr = _float(lr)
                    if math.isfinite(lr) and lr >= 0:  # a rate the service would refuse
                        point.lr = lr
            except (TypeError, ValueError) as e:
                self.r.warnings.once(
                    "bad-point", "forecaster: skipped a point that is not a number (%s)", e
                )
                continue
            if step <= last:
                self.r.warnings.once(
                    "old-step",
                    "forecaster: skipped step %d of run %r: the run already has step %d "
                    "(steps must increase; a resumed job re-attaches after its last step)",
                    step,
                    self.r.run,
                    last,
                )
                continue
            last = step
            out.append(point)
        if self.r.dropped:
            self.r.warnings.once(
                "dropped",
                "forecaster: the queue of run %r is full (%d points): the oldest points are "
                "being dropped until the service at %s takes them",
                self.r.run,
                self.r._queue_size,
                self.conn.address,
            )
        return out

    def _send(self, points: list[pb.Point]) -> None:
        schedule = self._take_new_schedule()
        self.last_step = points[-1].step
        if self.streaming and schedule is None:
            if self.stream is None:
                self.stream = _Stream(self.conn, self._on_stream_response)
            self.unconfirmed += points
            self.stream.send(self._request(points, None))
            if self.stream.sent >= _STREAM_BATCHES:
                self._end_stream()
            return
        # A new schedule goes in a call of its own, after the stream has been answered, so
        # that a schedule the service refuses costs no points.
        self._end_stream()
        self._report_once(points, schedule)

    def _request(
        self, points: list[pb.Point], schedule: pb.LrSchedule | None
    ) -> pb.ReportMetricsRequest:
        request = pb.ReportMetricsRequest(study=self.r.study, run=self.r.run, points=points)
        if schedule is not None:
            request.lr_schedule.CopyFrom(schedule)
        return request

    def _report_once(self, points: list[pb.Point], schedule: pb.LrSchedule | None) -> None:
        try:
            response = self.conn.stub.ReportMetrics(
                self._request(points, schedule),
                timeout=self.conn.timeout_s,
                metadata=self.conn.metadata,
            )
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT and schedule is not None:
                self.r.warnings.once(
                    "schedule-refused",
                    "forecaster: the service refused the planned lr schedule (%s); "
                    "reporting without it",
                    e.details(),
                )
                self._report_once(points, None)
                return
            if schedule is not None and self.r._new_schedule is None:
                # Not refused for itself (a batch over the service's limit is halved and
                # sent again; a lost connection is retried): it goes with the next batch.
                self.r._new_schedule = schedule
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                self._skip_batch(points, e)
                return
            self.unconfirmed += points
            raise
        self.r._decision = Decision.from_proto(response.decision)

    def _take_new_schedule(self) -> pb.LrSchedule | None:
        new, self.r._new_schedule = self.r._new_schedule, None
        if callable(new):
            new = self._planned(new)
        return new

    def _skip_batch(self, points: list[pb.Point], error: grpc.RpcError) -> None:
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(points) > 1:
            self.r._batch_size = max(1, len(points) // 2)  # the service's batch limit is lower
            self.last_step = points[0].step - 1
            self.resend[:0] = points
            return
        self.r.warnings.once(
            "refused-batch",
            "forecaster: the service refused a batch of run %r (%s); skipping it",
            self.r.run,
            describe(error),
        )

    def _on_stream_response(self, response: pb.StreamMetricsResponse) -> None:
        self.r._decision = Decision.from_proto(response.decision)

    def _end_stream(self) -> None:
        """Half-closes the stream and waits for the service to answer everything on it."""
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.finish(self.conn.timeout_s + 30.0)
        self.unconfirmed = []

    # failures ------------------------------------------------------------------------------

    def failed(self, error: grpc.RpcError) -> float:
        """Handles a failed call; returns how long to wait before trying again."""
        self.failures += 1
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        self.attached = False
        code = error.code() if hasattr(error, "code") else None
        r = self.r
        if code in _FATAL:
            self.refused = True
            r._active = False
            log.warning(
                "forecaster: %s refuses run %r (%s); training goes on without it",
                self.conn.address,
                r.run,
                describe(error),
            )
            return 0.0
        if code == grpc.StatusCode.UNIMPLEMENTED and self.streaming:
            self.streaming = False  # a proxy without streaming: one call per batch from now on
            return 0.0
        refused = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        if code in refused and self.streaming:
            # One batch on the stream was refused: find it with one call per batch.
            self.streaming = False
            self.r.warnings.once(
                "stream-refused",
                "forecaster: the service refused a batch on the stream (%s); "
                "sending batch by batch",
                describe(error),
            )
            return 0.0
        if code in _AUTH:
            r.warnings.once(
                "auth",
                "forecaster: %s refused the token (%s); training goes on, retrying every %.0f s",
                self.conn.address,
                describe(error),
                _BACKOFF_MAX_S,
            )
            self.backoff_s = _BACKOFF_MAX_S
        else:
            r.warnings.once(
                "unreachable",
                "forecaster: cannot reach the service at %s (%s); training goes on, "
                "points are queued (up to %d) and sent when it is back",
                self.conn.address,
                describe(error),
                r._queue_size,
            )
        delay = self.backoff_s * (0.8 + 0.4 * random.random())
        self.backoff_s = min(self.backoff_s * 2, _BACKOFF_MAX_S)
        return delay

    def finish_run(self, state: str | None) -> None:
        if state is None or self.refused:
            return
        try:
            self.conn.finish(self.r.study, self.r.run, state)
        except grpc.RpcError as e:
            self.r.warnings.once(
                "finish",
                "forecaster: could not mark run %r %s (%s)",
                self.r.run,
                state,
                describe(e),
            )

    def shutdown(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if self.r.dropped:
            log.warning(
                "forecaster: %d points of run %r were dropped because the queue (%d) was full",
                self.r.dropped,
                self.r.run,
                self.r._queue_size,
            )


class _ClientError(grpc.RpcError):
    """A failure the client finds itself, handled like the service's own statuses."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self._code = code
        self._message = message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


class _Stream:
    """One StreamMetrics call: batches go in from the sender, decisions come back on a reader."""

    def __init__(self, conn: Connection, on_response: Callable[[Any], None]) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.error: grpc.RpcError | None = None
        self.sent = 0
        self._done = threading.Event()
        self._call = conn.stub.StreamMetrics(iter(self._requests.get, None), metadata=conn.metadata)
        threading.Thread(
            target=self._read, args=(on_response,), name="forecaster-stream", daemon=True
        ).start()

    def _read(self, on_response: Callable[[Any], None]) -> None:
        try:
            for response in self._call:
                on_response(response)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self._done.set()

    def send(self, request: pb.ReportMetricsRequest) -> None:
        if self.error is not None:
            raise self.error
        self._requests.put(request)
        self.sent += 1

    def finish(self, timeout_s: float) -> None:
        """Half-closes; returns when the service has answered all (raises what went wrong)."""
        self._requests.put(None)
        if not self._done.wait(timeout_s):
            self._call.cancel()
            raise _ClientError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the service did not answer the stream within {timeout_s:.0f} s",
            )
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self._requests.put(None)
        self._call.cancel()


def _float(x: Any) -> float:
    """A Python/numpy/torch scalar as a float (a tensor's device sync happens here, off the
    training thread)."""
    return float(x.item() if hasattr(x, "item") else x)
