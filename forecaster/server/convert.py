"""Proto <-> domain types, both directions, in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, struct_pb2

from forecaster.curves import Curve, Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import InvalidArgumentError, ResourceExhaustedError
from forecaster.models.prediction import ForecastSummary
from forecaster.policies import Action, Decision, Reason
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.store import DecisionChange, Run, RunSpec, RunState, Study, StudySpec

if TYPE_CHECKING:
    from forecaster.engine import RunSummary

_DIRECTIONS = MappingProxyType(
    {Direction.MIN: pb.DIRECTION_MINIMIZE, Direction.MAX: pb.DIRECTION_MAXIMIZE}
)
_STATES = MappingProxyType(
    {
        RunState.RUNNING: pb.RUN_STATE_RUNNING,
        RunState.FINISHED: pb.RUN_STATE_FINISHED,
        RunState.STOPPED: pb.RUN_STATE_STOPPED,
        RunState.FAILED: pb.RUN_STATE_FAILED,
    }
)
_ACTIONS = MappingProxyType({Action.CONTINUE: pb.ACTION_CONTINUE, Action.STOP: pb.ACTION_STOP})
_REASONS = MappingProxyType({r: pb.Reason.Value(f"REASON_{r.name}") for r in Reason})
_KINDS = MappingProxyType(
    {k: pb.ScheduleKind.Value(f"SCHEDULE_KIND_{k.name}") for k in ScheduleKind}
)


def _inverse(table: Mapping[Any, int]) -> Mapping[int, Any]:
    return MappingProxyType({int(v): k for k, v in table.items()})


_DIRECTIONS_IN, _STATES_IN = _inverse(_DIRECTIONS), _inverse(_STATES)
_KINDS_IN = _inverse(_KINDS)


def direction_from_proto(value: int, where: str) -> Direction:
    if value not in _DIRECTIONS_IN:
        raise InvalidArgumentError(
            f"{where}: direction is required: DIRECTION_MINIMIZE (lower is better) or "
            "DIRECTION_MAXIMIZE (higher is better)."
        )
    direction: Direction = _DIRECTIONS_IN[value]
    return direction


def state_from_proto(value: int) -> RunState | None:
    """None for UNSPECIFIED (a filter meaning "any")."""
    if value == pb.RUN_STATE_UNSPECIFIED:
        return None
    if value not in _STATES_IN:
        raise InvalidArgumentError(f"unknown run state {value}.")
    state: RunState = _STATES_IN[value]
    return state


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON; whole numbers become ints (Struct numbers are all doubles)."""

    def fix(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    out: dict[str, Any] = fix(json_format.MessageToDict(s))
    return out


def dict_to_struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _positive_or_none(v: int) -> int | None:
    return v if v > 0 else None


def schedule_from_proto(m: pb.LrSchedule, has: bool) -> LrSchedule | None:
    if not has or m.kind == pb.SCHEDULE_KIND_UNSPECIFIED:
        return None
    if m.kind not in _KINDS_IN:
        raise InvalidArgumentError(f"lr_schedule: unknown kind {m.kind}.")
    return LrSchedule(
        _KINDS_IN[m.kind],
        peak_lr=m.peak_lr,
        final_lr=m.final_lr,
        warmup_steps=m.warmup_steps,
        total_steps=m.total_steps,
        decay_fraction=m.decay_fraction,
        decay_shape=m.decay_shape or "linear",
        step_size=m.step_size,
        gamma=m.gamma,
        steps=tuple(m.steps),
        values=tuple(m.values),
    )


def schedule_to_proto(s: LrSchedule | None) -> pb.LrSchedule | None:
    if s is None:
        return None
    return pb.LrSchedule(
        kind=_KINDS[s.kind],
        peak_lr=s.peak_lr,
        final_lr=s.final_lr,
        warmup_steps=s.warmup_steps,
        total_steps=s.total_steps,
        decay_fraction=s.decay_fraction,
        decay_shape=s.decay_shape,
        step_size=s.step_size,
        gamma=s.gamma,
        steps=list(s.steps),
        values=list(s.values),
    )


def study_spec_from_proto(m: pb.StudySpec) -> StudySpec:
    where = f"study {m.name!r}"
    if m.HasField("target") and m.direction not in _DIRECTIONS_IN:
        raise InvalidArgumentError(
            f"{where}: setting target={m.target} needs a direction, to know which side of it "
            "is better: set DIRECTION_MINIMIZE or DIRECTION_MAXIMIZE."
        )
    return StudySpec(
        name=m.name,
        metric=m.metric,
        direction=direction_from_proto(m.direction, where),
        max_step=_positive_or_none(m.max_step),
        target=m.target if m.HasField("target") else None,
        policy=m.policy.name,
        policy_params=struct_to_dict(m.policy.params),
        forecaster=m.forecaster,
    )


def study_to_proto(study: Study) -> pb.Study:
    s = study.spec
    spec = pb.StudySpec(
        name=s.name,
        metric=s.metric,
        direction=_DIRECTIONS[s.direction],
        max_step=s.max_step or 0,
        target=s.target,
        policy=pb.PolicySettings(name=s.policy, params=dict_to_struct(s.policy_params)),
        forecaster=s.forecaster,
    )
    return pb.Study(spec=spec, created_at_s=study.created_at_s, n_runs=study.n_runs)


def run_spec_from_proto(m: pb.RunSpec) -> RunSpec:
    return RunSpec(
        name=m.name,
        config=struct_to_dict(m.config),
        max_step=_positive_or_none(m.max_step),
        lr_schedule=schedule_from_proto(m.lr_schedule, m.HasField("lr_schedule")),
    )


def run_to_proto(run: Run) -> pb.Run:
    spec = pb.RunSpec(
        name=run.spec.name,
        config=dict_to_struct(run.spec.config),
        max_step=run.spec.max_step or 0,
        lr_schedule=schedule_to_proto(run.spec.lr_schedule),
    )
    return pb.Run(
        study=run.study,
        spec=spec,
        state=_STATES[run.state],
        n_points=run.n_points,
        last_step=run.last_step,
        last_value=run.last_value,
        best_value=run.best_value,
        created_at_s=run.created_at_s,
        finished_at_s=run.finished_at_s or 0.0,
    )


def points_from_proto(points: Sequence[pb.Point], max_points: int, where: str) -> Points:
    """Validates a batch: size limit first (RESOURCE_EXHAUSTED), then the points themselves."""
    if len(points) > max_points:
        raise ResourceExhaustedError(
            f"{where}: the batch has {len(points)} points; the limit max_points_per_batch is "
            f"{max_points}. Split it into smaller batches."
        )
    if not points:
        raise InvalidArgumentError(f"{where}: the batch is empty; send at least one point.")
    try:
        return Points.of(
            [p.step for p in points],
            [p.value for p in points],
            [p.lr if p.HasField("lr") else None for p in points],
            [p.wall_time_s if p.HasField("wall_time_s") else None for p in points],
        )
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{where}: {e}") from None


def decision_to_proto(d: Decision) -> pb.Decision:
    return pb.Decision(
        action=_ACTIONS[d.action],
        reason=_REASONS[d.reason],
        explanation=d.explanation,
        probabilities=dict(d.probabilities),
        expected_saved_steps=d.expected_saved_steps,
        at_step=d.at_step,
        policy=d.policy,
    )


def forecast_to_proto(f: ForecastSummary) -> pb.Forecast:
    return pb.Forecast(
        steps=list(f.steps),
        quantile_levels=list(f.quantile_levels),
        quantiles=[pb.QuantileRow(values=row.tolist()) for row in f.quantiles],
        mean=f.mean.tolist(),
        prob_reach_target=f.prob_reach_target,
        model=f.model,
        model_version=f.model_version,
        converged=f.converged,
        notes=list(f.notes),
        observed_until_step=f.observed_until_step,
        steps_to_target=list(f.steps_to_target),
    )


def curve_from_request(m: pb.ForecastCurveRequest, max_points: int) -> Curve:
    points = points_from_proto(m.points, max_points, "ForecastCurve")
    target = m.target if m.HasField("target") else None
    if target is not None and not math.isfinite(target):
        raise InvalidArgumentError(f"ForecastCurve: target must be finite; got {target}.")
    return Curve.from_points(
        points,
        direction_from_proto(m.direction, "ForecastCurve"),
        max_step=_positive_or_none(m.max_step),
        target=target,
        schedule=schedule_from_proto(m.lr_schedule, m.HasField("lr_schedule")),
    )


def points_to_proto(points: Points) -> list[pb.Point]:
    """Stored points as sent: lr and wall time only where known (NaN is "unknown" there)."""
    out = []
    for step, value, lr, wall in zip(
        points.steps.tolist(),
        points.values.tolist(),
        points.lr.tolist(),
        points.wall_time_s.tolist(),
        strict=True,
    ):
        p = pb.Point(step=step, value=value)
        if not math.isnan(lr):
            p.lr = lr
        if not math.isnan(wall):
            p.wall_time_s = wall
        out.append(p)
    return out


def decision_change_to_proto(change: DecisionChange) -> pb.DecisionChange:
    decision = pb.Decision(
        action=_ACTIONS[Action(change.action)],
        reason=_REASONS[Reason(change.reason)],
        explanation=change.explanation,
        probabilities=dict(change.probabilities),
        at_step=change.at_step,
        policy=change.policy,
    )
    return pb.DecisionChange(
        decision=decision,
        decided_at_s=change.decided_at_s,
        forecast_final=change.forecast_final,
    )


def run_summary_to_proto(summary: RunSummary) -> pb.RunSummary:
    return pb.RunSummary(
        run=run_to_proto(summary.run),
        decision=None if summary.decision is None else decision_to_proto(summary.decision),
        forecast=None if summary.forecast is None else forecast_to_proto(summary.forecast),
        prob_beat_incumbent=summary.prob_beat_incumbent,
        incumbent=summary.incumbent,
        saved_steps=summary.saved_steps,
    )


def page_of(token: str, size: int, default: int, largest: int, what: str) -> tuple[int, int]:
    """(position, size) of a page request: the token is the position this service gave as
    next_page_token; size 0 is the default, and more than largest is refused."""
    if size < 0 or size > largest:
        raise InvalidArgumentError(f"{what}: page_size must be in [0, {largest}]; got {size}.")
    if not token:
        return 0, size or default
    if not token.lstrip("-").isdigit():
        raise InvalidArgumentError(
            f"{what}: page_token {token!r} is not one this service gave; pass the "
            "next_page_token of the previous page, or none for the first page."
        )
    return int(token), size or default
