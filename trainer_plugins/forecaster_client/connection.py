"""One channel to the service and the few calls a plugin makes over it.

Everything here is synchronous and bounded by a deadline; the Reporter calls it from its
background thread, the Optuna pruner and the Ray Tune stopper from the thread that asks them.
Nothing here swallows errors: callers decide how to fail open.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import struct_pb2

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client._proto import forecaster_pb2_grpc as pb_grpc
from forecaster_client.decision import Decision, RankedRun

log = logging.getLogger("forecaster_client")

_DIRECTIONS = MappingProxyType(
    {"minimize": pb.DIRECTION_MINIMIZE, "maximize": pb.DIRECTION_MAXIMIZE}
)
_STATES = MappingProxyType(
    {
        "finished": pb.RUN_STATE_FINISHED,
        "stopped": pb.RUN_STATE_STOPPED,
        "failed": pb.RUN_STATE_FAILED,
    }
)
_SCHEDULE_KINDS = MappingProxyType(
    {
        name.removeprefix("SCHEDULE_KIND_").lower(): value
        for name, value in pb.ScheduleKind.items()
        if value != pb.SCHEDULE_KIND_UNSPECIFIED
    }
)

# True: TLS with the system's roots; a path: TLS trusting the root certificate(s) in that PEM
# file (a private CA); grpc.ChannelCredentials of your own (tls_credentials, for mutual TLS).
Credentials: TypeAlias = bool | str | os.PathLike[str] | grpc.ChannelCredentials | None
# A planned learning-rate schedule as a caller gives it, and as it travels once a mapping is
# read: the message, or a callable returning one (called on the thread that sends it).
ReadPlan: TypeAlias = Callable[[], pb.LrSchedule | Mapping[str, Any] | None]
ScheduleSource: TypeAlias = pb.LrSchedule | Mapping[str, Any] | ReadPlan | None
Plan: TypeAlias = pb.LrSchedule | ReadPlan | None

R = TypeVar("R")


class WrongStudyError(Exception):
    """The study exists with another metric or direction: a run must not report to it."""


def study_mismatch(existing: pb.StudySpec, ours: pb.StudySpec) -> dict[str, str]:
    """The fields that make a study another one for this run (metric, direction), each with
    "stored X, this run Y"; empty when the run may join it."""
    wrong = {}
    if existing.metric != ours.metric:
        wrong["metric"] = f"stored {existing.metric!r}, this run {ours.metric!r}"
    if existing.direction != ours.direction:
        names = [
            pb.Direction.Name(d).removeprefix("DIRECTION_").lower()
            for d in (existing.direction, ours.direction)
        ]
        wrong["direction"] = f"stored {names[0]}, this run {names[1]}"
    return wrong


class Warnings:
    """Logs each kind of problem once, so a long run with the service down logs one line."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._seen:
            self._seen.add(key)
            log.warning(message, *args)


def tls_credentials(
    root_cert: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files: the roots to trust (None: the system's) and, for a
    service that requires client certificates (mutual TLS), this client's certificate and key."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together: give both or neither")

    def read(path: str | os.PathLike[str] | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return grpc.ssl_channel_credentials(read(root_cert), read(client_key), read(client_cert))


def channel_credentials(tls: Credentials) -> grpc.ChannelCredentials | None:
    """The channel's credentials for a `tls` argument; None for a plain channel."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    return tls_credentials(root_cert=tls)


def direction_of(direction: str | int) -> pb.Direction:
    """ "minimize"/"maximize" (or the enum value) -> the wire enum."""
    if isinstance(direction, int):
        return cast(pb.Direction, direction)
    try:
        return _DIRECTIONS[direction.lower()]
    except KeyError:
        raise ValueError(f"direction must be 'minimize' or 'maximize', not {direction!r}") from None


def state_of(state: str) -> pb.RunState:
    try:
        return _STATES[state.lower()]
    except KeyError:
        raise ValueError(f"state must be one of {sorted(_STATES)}, not {state!r}") from None


def to_struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """A JSON-like mapping as a protobuf Struct; values that JSON cannot hold become strings."""
    if not values:
        return None
    struct = struct_pb2.Struct()
    struct.update({str(k): _jsonable(v) for k, v in values.items()})
    return struct


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def lr_schedule_of(schedule: pb.LrSchedule | Mapping[str, Any] | None) -> pb.LrSchedule | None:
    """A planned schedule as the wire message; a mapping uses the message's field names and
    kind by name: {"kind": "cosine", "peak_lr": 3e-4, "total_steps": 10_000}."""
    if schedule is None or isinstance(schedule, pb.LrSchedule):
        return schedule
    fields = dict(schedule)
    kind = fields.pop("kind", None)
    if isinstance(kind, str):
        if kind.lower() not in _SCHEDULE_KINDS:
            raise ValueError(
                f"lr_schedule kind must be one of {sorted(_SCHEDULE_KINDS)}, not {kind!r}"
            )
        kind = _SCHEDULE_KINDS[kind.lower()]
    try:
        return pb.LrSchedule(kind=kind or pb.SCHEDULE_KIND_UNSPECIFIED, **fields)
    except ValueError as e:
        raise ValueError(f"lr_schedule: {e}") from None


def plan_of(schedule: ScheduleSource) -> Plan:
    """A schedule as it travels: a mapping read now (a wrong one is the caller's bug: it raises
    here), a callable kept to be called when the schedule is sent."""
    return schedule if callable(schedule) else lr_schedule_of(schedule)


def schedule_refused(error: grpc.RpcError, schedule: pb.LrSchedule | None) -> bool:
    """The service refused a request that carried a planned schedule: the schedule is what
    it refuses (the service checks it against the run's budget)."""
    return schedule is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT


def send_with_schedule(
    send: Callable[[pb.LrSchedule | None], R], schedule: pb.LrSchedule | None, warnings: Warnings
) -> R:
    """``send(schedule)``; when the service refuses the schedule, one warning and
    ``send(None)``: a schedule costs neither the run nor its points."""
    try:
        return send(schedule)
    except grpc.RpcError as e:
        if not schedule_refused(e, schedule):
            raise
        warnings.once(
            "schedule-refused",
            "forecaster: the service refused the planned lr schedule (%s); reporting without it",
            e.details(),
        )
        return send(None)


def report_request(
    study: str, run: str, points: Sequence[pb.Point], lr_schedule: pb.LrSchedule | None = None
) -> pb.ReportMetricsRequest:
    """One batch of a run's points, with the planned schedule when it changes."""
    request = pb.ReportMetricsRequest(study=study, run=run, points=points)
    if lr_schedule is not None:
        request.lr_schedule.CopyFrom(lr_schedule)
    return request


def study_spec(
    name: str,
    *,
    metric: str,
    direction: str | int,
    max_step: int = 0,
    target: float | None = None,
    policy: str = "",
    policy_params: Mapping[str, Any] | None = None,
    forecaster: str = "",
    metric_kind: str = "",
    metric_lower: float | None = None,
    metric_upper: float | None = None,
) -> pb.StudySpec:
    """The StudySpec a plugin creates its study with. metric_kind ("loss", "accuracy",
    "probability", "win_rate", "error_rate", "perplexity", "unbounded"; "" = inferred by the
    service) and metric_lower/metric_upper bound the service's forecasts of the metric."""
    spec = pb.StudySpec(
        name=name,
        metric=metric,
        direction=direction_of(direction),
        max_step=int(max_step or 0),
        forecaster=forecaster,
        metric_kind=metric_kind,
    )
    if target is not None:
        spec.target = float(target)
    if metric_lower is not None:
        spec.metric_lower = float(metric_lower)
    if metric_upper is not None:
        spec.metric_upper = float(metric_upper)
    if policy or policy_params:
        spec.policy.name = policy
        params = to_struct(policy_params)
        if params is not None:
            spec.policy.params.CopyFrom(params)
    return spec


class Connection:
    """A channel with its credentials, deadline and the calls a plugin needs.

    Args:
        address: "host:port" of the service.
        token: sent as "authorization: Bearer <token>" when the service requires one (its
            tokens_file gives each team its token; a team sees only its own studies).
        tls: True for TLS with the system's root certificates, the path of a PEM file of root
            certificates (a private CA), or grpc.ChannelCredentials of your own
            (`tls_credentials(root, cert, key)` for mutual TLS); False or None for a plain
            channel (a loopback or a private network).
        timeout_s: deadline of each unary call.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 5.0,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        # Keepalive finds a dead peer under a long-lived stream within tens of seconds.
        options = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000)]
        creds = channel_credentials(tls)
        if creds is not None:
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.CurveServiceStub(self.channel)

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self.timeout_s, metadata=self.metadata)

    def ensure_study(self, spec: pb.StudySpec, warnings: Warnings | None = None) -> pb.Study:
        """Creates the study, or joins the existing one of that name, warning when its budget,
        target or policy differ from ours (the existing ones win). WrongStudyError when its
        metric or direction differ: this run's values would be judged as another metric's."""
        try:
            return self._call(self.stub.CreateStudy, pb.CreateStudyRequest(study=spec)).study
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            existing = self._call(self.stub.GetStudy, pb.GetStudyRequest(name=spec.name)).study
            wrong = study_mismatch(existing.spec, spec)
            if wrong:
                raise WrongStudyError(
                    f"study {spec.name!r} exists with another {' and '.join(wrong)} "
                    f"({'; '.join(wrong.values())}): reporting to it would judge this run's "
                    "values as another metric's. Use another study name, or the study's own "
                    "metric and direction."
                ) from None
            (warnings or Warnings()).once(
                "study-differs",
                "forecaster: study %r already exists with another definition; reporting to it as "
                "it is (%s)",
                spec.name,
                e.details(),
            )
            return existing

    def attach(
        self, study: pb.StudySpec, run: pb.RunSpec, warnings: Warnings | None = None
    ) -> pb.Run:
        """The study created or joined, then the run started or re-attached."""
        self.ensure_study(study, warnings)
        return self.start_run(study.name, run, warnings)

    def start_run(self, study: str, run: pb.RunSpec, warnings: Warnings | None = None) -> pb.Run:
        """Starts the run or re-attaches to it. A planned schedule the service refuses is
        dropped with a warning rather than losing the run."""
        warnings = warnings or Warnings()
        planned = run.lr_schedule if run.HasField("lr_schedule") else None

        def start(schedule: pb.LrSchedule | None) -> pb.Run:
            spec = run
            if schedule is None and planned is not None:
                spec = pb.RunSpec()
                spec.CopyFrom(run)
                spec.ClearField("lr_schedule")
            return self._call(self.stub.StartRun, pb.StartRunRequest(study=study, run=spec)).run

        try:
            return send_with_schedule(start, planned, warnings)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            warnings.once(
                "run-differs",
                "forecaster: run %r of study %r already exists with another definition; "
                "reporting to it as it is (%s)",
                run.name,
                study,
                e.details(),
            )
            return self.get_run(study, run.name)

    def get_run(self, study: str, run: str) -> pb.Run:
        return self._call(self.stub.GetRun, pb.GetRunRequest(study=study, run=run)).run

    def report(
        self,
        study: str,
        run: str,
        points: Sequence[pb.Point],
        lr_schedule: pb.LrSchedule | None = None,
    ) -> pb.ReportMetricsResponse:
        request = report_request(study, run, points, lr_schedule)
        return self._call(self.stub.ReportMetrics, request)

    def decision(self, study: str, run: str) -> Decision:
        """The service's decision about the run's last point, with its current explanation
        and probabilities."""
        request = pb.GetDecisionRequest(study=study, run=run)
        return Decision.from_proto(self._call(self.stub.GetDecision, request).decision)

    def run_summary(self, study: str, run: str) -> pb.RunSummary:
        """The run's latest decision and the forecast of its final value."""
        request = pb.GetRunSummaryRequest(study=study, run=run)
        return self._call(self.stub.GetRunSummary, request).summary

    def rank(self, study: str, limit: int = 0) -> list[RankedRun]:
        """The study's running and paused runs, the one whose rest buys most first."""
        request = pb.RankRunsRequest(study=study, limit=limit)
        return [RankedRun.from_proto(r) for r in self._call(self.stub.RankRuns, request).runs]

    def finish(self, study: str, run: str, state: str = "finished") -> pb.Run:
        request = pb.FinishRunRequest(study=study, run=run, state=state_of(state))
        return self._call(self.stub.FinishRun, request).run

    def close(self) -> None:
        self.channel.close()


def last_stored_step(run: pb.Run) -> int:
    """The run's last stored step; -1 when it has no points yet."""
    return run.last_step if run.n_points else -1


def describe(error: grpc.RpcError) -> str:
    """ "UNAVAILABLE: failed to connect..." — the code and the service's own words."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'ERROR'}: {details}"
