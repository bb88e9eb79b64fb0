"""Proto <-> domain types, both directions, in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from forecaster.curves import Curve, Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import InvalidArgumentError, ResourceExhaustedError
from forecaster.models.prediction import ForecastSummary
from forecaster.policies import Action, Decision, Reason
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.store import Run, RunSpec, RunState, Study, StudySpec

_DIRECTIONS = {Direction.MIN: pb.DIRECTION_MINIMIZE, Direction.MAX: pb.DIRECTION_MAXIMIZE}
_STATES = {
    RunState.RUNNING: pb.RUN_STATE_RUNNING,
    RunState.FINISHED: pb.RUN_STATE_FINISHED,
    RunState.STOPPED: pb.RUN_STATE_STOPPED,
    RunState.FAILED: pb.RUN_STATE_FAILED,
}
_ACTIONS = {Action.CONTINUE: pb.ACTION_CONTINUE, Action.STOP: pb.ACTION_STOP}
_REASONS = {r: pb.Reason.Value(f"REASON_{r.name}") for r in Reason}
_KINDS = {k: pb.ScheduleKind.Value(f"SCHEDULE_KIND_{k.name}") for k in ScheduleKind}


def _inverse(table: dict[Any, int]) -> dict[int, Any]:
    return {v: k for k, v in table.items()}


_DIRECTIONS_IN, _STATES_IN = _inverse(_DIRECTIONS), _inverse(_STATES)
_ACTIONS_IN, _REASONS_IN, _KINDS_IN = _inverse(_ACTIONS), _inverse(_REASONS), _inverse(_KINDS)


def direction_from_proto(value: int, where: str) -> Direction:
    if value not in _DIRECTIONS_IN:
        raise InvalidArgumentError(
            f"{where}: direction is required: DIRECTION_MINIMIZE (lower is better) or "
            "DIRECTION_MAXIMIZE (higher is better)."
        )
    return _DIRECTIONS_IN[value]  # type: ignore[no-any-return]


def state_from_proto(value: int) -> RunState | None:
    """None for UNSPECIFIED (a filter meaning "any")."""
    if value == pb.RUN_STATE_UNSPECIFIED:
        return None
    if value not in _STATES_IN:
        raise InvalidArgumentError(f"unknown run state {value}.")
    return _STATES_IN[value]  # type: ignore[no-any-return]


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

    return fix(json_format.MessageToDict(s))  # type: ignore[no-any-return]


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


def decision_from_proto(m: pb.Decision) -> Decision:
    return Decision(
        action=_ACTIONS_IN[m.action],
        reason=_REASONS_IN[m.reason],
        explanation=m.explanation,
        probabilities=dict(m.probabilities),
        expected_saved_steps=m.expected_saved_steps,
        at_step=m.at_step,
        policy=m.policy,
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
