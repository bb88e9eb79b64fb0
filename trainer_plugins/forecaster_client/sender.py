"""The Reporter's background thread: everything that waits on the network.

It attaches to the service (creates the study and the run, or re-attaches to them), sends the
queued points in batches over one StreamMetrics stream (or one ReportMetrics call per batch
where streaming is refused) and keeps the latest decision in the Outbox, where the training
thread reads it without waiting.

Fail-open: with the service down, slow or refusing, one warning is logged per kind of problem
and the sender retries with exponential backoff; what the service did not confirm is sent
again after it re-attaches. The Outbox is bounded: when it is full the OLDEST queued point is
dropped (the recent points are the ones a decision rests on) and counted.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.backoff import Backoff
from forecaster_client.connection import (
    Connection,
    Plan,
    Warnings,
    WrongStudyError,
    describe,
    last_stored_step,
    lr_schedule_of,
    report_request,
    schedule_refused,
    send_with_schedule,
)
from forecaster_client.decision import Decision

log = logging.getLogger("forecaster_client")

# A stream is closed and re-opened after this many batches: its clean end confirms that the
# service stored everything sent on it, so at most this much is re-sent after a failure.
_STREAM_BATCHES = 50
# The run is finished: nothing sent again will be taken. (NOT_FOUND re-attaches instead.)
_FATAL = frozenset({grpc.StatusCode.FAILED_PRECONDITION})
_AUTH = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_REFUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})

# step, value, lr, seconds since the Reporter started: read as numbers on the sender thread.
QueuedPoint = tuple[Any, Any, Any, float]


class Outbox:
    """All the training thread and the sender share: the queued points, the latest decision,
    a schedule waiting to be sent, how the run should end, and the signals between the two.

    The training thread writes ``points`` (through put()), ``new_schedule``, ``final_state``
    and the signals; the sender writes ``decision``, ``refused`` and lowers ``batch_size``.
    """

    def __init__(self, queue_size: int, batch_size: int) -> None:
        self.points: deque[QueuedPoint] = deque(maxlen=queue_size)
        self.queue_size = queue_size
        self.batch_size = batch_size  # the sender lowers it to the service's limit
        self.dropped = 0
        self.decision = Decision()
        self.new_schedule: Plan = None
        self.refused = False  # the service refuses the run: nothing more is reported
        self.final_state: str | None = None
        # wake: a full batch is waiting (put() sets it, once per batch). urgent: close() or
        # flush() is waiting; only it cuts a backoff short, so that a job reporting into an
        # unreachable service does not make the sender spin.
        self.wake = threading.Event()
        self.urgent = threading.Event()
        self.closing = threading.Event()
        self.abandoned = False  # close() gave up waiting: the sender ends without sending
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()

    def put(self, point: QueuedPoint) -> None:
        """Queues a point, dropping the oldest when full. Called on the training thread."""
        q = self.points
        if len(q) == self.queue_size:
            self.dropped += 1
        q.append(point)
        if len(q) == self.batch_size:
            self.wake.set()

    def hurry(self) -> None:
        """Someone waits on the sender: wake it now, out of a backoff too."""
        self.urgent.set()
        self.wake.set()

    def flushed(self) -> threading.Event:
        """An event set once everything queued so far is stored (or the sender has ended)."""
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        self.hurry()
        return done

    def take_waiters(self) -> list[threading.Event]:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        return waiters

    def put_back_waiters(self, waiters: list[threading.Event]) -> None:
        with self._waiters_lock:
            self._waiters[:0] = waiters

    def release_waiters(self) -> None:
        """The sender has ended: nobody waits on it."""
        with self._waiters_lock:
            for w in self._waiters:
                w.set()


class Sender:
    """The background thread's state: attachment, stream, points sent but not yet confirmed."""

    def __init__(
        self,
        conn: Connection,
        outbox: Outbox,
        *,
        study_spec: pb.StudySpec,
        run_spec: pb.RunSpec,
        schedule: Plan,
        stream: bool,
        flush_interval_s: float,
        warnings: Warnings,
    ) -> None:
        self.conn = conn
        self.outbox = outbox
        self.warnings = warnings
        self.study = study_spec.name
        self.run_name = run_spec.name
        self._study_spec = study_spec
        self._run_spec = run_spec
        self._schedule = schedule  # the planned schedule, sent when attaching
        self._flush_interval_s = flush_interval_s
        self.attached = False
        self.last_step: int | None = None  # the last step the service has (or will have)
        self.stream: _Stream | None = None
        self.streaming = stream
        self.unconfirmed: list[pb.Point] = []
        self.resend: list[pb.Point] = []
        self.backoff = Backoff(jitter=0.2)
        self.failures = 0

    def run(self) -> None:
        """The thread's loop: send what is queued every flush interval (or when a batch is
        full, or someone waits), back off after failures, end the run on close()."""
        out = self.outbox
        delay = 0.0
        while not out.abandoned:
            if delay:  # backing off: only close() or flush() cuts it short
                out.urgent.wait(min(delay, 0.2) if out.closing.is_set() else delay)
            elif not out.closing.is_set():
                out.wake.wait(self._flush_interval_s)
            out.wake.clear()
            out.urgent.clear()
            if out.abandoned:
                break
            # Read before draining: what was reported before close() is in the queue by now.
            closing = out.closing.is_set()
            waiters = out.take_waiters()
            try:
                self.drain(confirm=bool(waiters) or closing)
            except WrongStudyError as e:
                out.refused = True
                log.error("forecaster: %s; training goes on without the service", e)
                break
            except grpc.RpcError as e:
                out.put_back_waiters(waiters)
                delay = self.failed(e)
                if out.refused:
                    break
                continue
            delay = 0.0
            self.backoff.reset()
            for w in waiters:
                w.set()
            if closing:
                self.finish_run(out.final_state)
                break
        self.shutdown()
        out.release_waiters()

    # attach --------------------------------------------------------------------------------

    def attach(self) -> None:
        source = self._schedule
        if callable(source):
            self._schedule = source = self._planned(source)
        spec = self._run_spec
        if source is not None:
            spec = pb.RunSpec()
            spec.CopyFrom(self._run_spec)
            spec.lr_schedule.CopyFrom(source)
        run = self.conn.attach(self._study_spec, spec, self.warnings)
        if run.state != pb.RUN_STATE_RUNNING:
            raise _ClientError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {self.run_name!r} of study {self.study!r} is already "
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

    def _planned(self, source: Callable[[], Any]) -> pb.LrSchedule | None:
        try:
            return lr_schedule_of(source())
        except Exception as e:  # a schedule we cannot read must not cost the run
            self.warnings.once(
                "schedule", "forecaster: could not read the planned lr schedule (%s)", e
            )
            return None

    # send ----------------------------------------------------------------------------------

    def drain(self, confirm: bool) -> None:
        """Sends everything queued; with confirm, also waits until the service stored it."""
        if not self.attached:
            self.attach()
        while True:
            size = self.outbox.batch_size
            points = self.resend[:size]
            del self.resend[: len(points)]
            if len(points) < size:
                points += self._take(size - len(points))
            if not points:
                break
            self._send(points)
        if confirm and self.stream is not None:
            self._end_stream()
            # The stream answers only when the action or reason changes: read the decision
            # about the last point, with its current explanation and probabilities.
            self.outbox.decision = self.conn.decision(self.study, self.run_name)

    def _take(self, n: int) -> list[pb.Point]:
        """Up to n queued points as messages, in increasing step order."""
        q = self.outbox.points
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
                self.warnings.once(
                    "bad-point", "forecaster: skipped a point that is not a number (%s)", e
                )
                continue
            if step <= last:
                self.warnings.once(
                    "old-step",
                    "forecaster: skipped step %d of run %r: the run already has step %d "
                    "(steps must increase; a resumed job re-attaches after its last step)",
                    step,
                    self.run_name,
                    last,
                )
                continue
            last = step
            out.append(point)
        if self.outbox.dropped:
            self.warnings.once(
                "dropped",
                "forecaster: the queue of run %r is full (%d points): the oldest points are "
                "being dropped until the service at %s takes them",
                self.run_name,
                self.outbox.queue_size,
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
            self.stream.send(report_request(self.study, self.run_name, points))
            if self.stream.sent >= _STREAM_BATCHES:
                self._end_stream()
            return
        # A new schedule goes in a call of its own, after the stream has been answered, so
        # that a schedule the service refuses costs no points.
        self._end_stream()
        response = send_with_schedule(
            lambda plan: self._report_once(points, plan), schedule, self.warnings
        )
        if response is not None:
            self.outbox.decision = Decision.from_proto(response.decision)

    def _report_once(
        self, points: list[pb.Point], schedule: pb.LrSchedule | None
    ) -> pb.ReportMetricsResponse | None:
        """One ReportMetrics call; None when the batch was refused and skipped (or halved to
        go again)."""
        try:
            return self.conn.report(self.study, self.run_name, points, schedule)
        except grpc.RpcError as e:
            if schedule_refused(e, schedule):
                raise  # send_with_schedule sends the batch again without it
            if schedule is not None and self.outbox.new_schedule is None:
                # Not refused for itself (a batch over the service's limit is halved and
                # sent again; a lost connection is retried): it goes with the next batch.
                self.outbox.new_schedule = schedule
            if e.code() in _REFUSED:
                self._skip_batch(points, e)
                return None
            self.unconfirmed += points
            raise

    def _take_new_schedule(self) -> pb.LrSchedule | None:
        new, self.outbox.new_schedule = self.outbox.new_schedule, None
        if callable(new):
            return self._planned(new)
        return new

    def _skip_batch(self, points: list[pb.Point], error: grpc.RpcError) -> None:
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(points) > 1:
            # The service's batch limit is lower.
            self.outbox.batch_size = max(1, len(points) // 2)
            self.last_step = points[0].step - 1
            self.resend[:0] = points
            return
        self.warnings.once(
            "refused-batch",
            "forecaster: the service refused a batch of run %r (%s); skipping it",
            self.run_name,
            describe(error),
        )

    def _on_stream_response(self, response: pb.StreamMetricsResponse) -> None:
        self.outbox.decision = Decision.from_proto(response.decision)

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
        if code in _FATAL:
            self.outbox.refused = True
            log.warning(
                "forecaster: %s refuses run %r (%s); training goes on without it",
                self.conn.address,
                self.run_name,
                describe(error),
            )
            return 0.0
        if code == grpc.StatusCode.UNIMPLEMENTED and self.streaming:
            self.streaming = False  # a proxy without streaming: one call per batch from now on
            return 0.0
        if code in _REFUSED and self.streaming:
            # One batch on the stream was refused: find it with one call per batch.
            self.streaming = False
            self.warnings.once(
                "stream-refused",
                "forecaster: the service refused a batch on the stream (%s); "
                "sending batch by batch",
                describe(error),
            )
            return 0.0
        if code in _AUTH:
            self.warnings.once(
                "auth",
                "forecaster: %s refused the token (%s); training goes on, retrying every %.0f s",
                self.conn.address,
                describe(error),
                self.backoff.max_s,
            )
            self.backoff.longest()
        else:
            self.warnings.once(
                "unreachable",
                "forecaster: cannot reach the service at %s (%s); training goes on, "
                "points are queued (up to %d) and sent when it is back",
                self.conn.address,
                describe(error),
                self.outbox.queue_size,
            )
        return self.backoff.next()

    def finish_run(self, state: str | None) -> None:
        if state is None or self.outbox.refused:
            return
        try:
            self.conn.finish(self.study, self.run_name, state)
        except grpc.RpcError as e:
            self.warnings.once(
                "finish",
                "forecaster: could not mark run %r %s (%s)",
                self.run_name,
                state,
                describe(e),
            )

    def shutdown(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if self.outbox.dropped:
            log.warning(
                "forecaster: %d points of run %r were dropped because the queue (%d) was full",
                self.outbox.dropped,
                self.run_name,
                self.outbox.queue_size,
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

    def __init__(
        self, conn: Connection, on_response: Callable[[pb.StreamMetricsResponse], None]
    ) -> None:
        self._requests: queue.SimpleQueue[pb.ReportMetricsRequest | None] = queue.SimpleQueue()
        self.error: grpc.RpcError | None = None
        self.sent = 0
        self._done = threading.Event()
        self._call = conn.stub.StreamMetrics(iter(self._requests.get, None), metadata=conn.metadata)
        threading.Thread(
            target=self._read, args=(on_response,), name="forecaster-stream", daemon=True
        ).start()

    def _read(self, on_response: Callable[[pb.StreamMetricsResponse], None]) -> None:
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
