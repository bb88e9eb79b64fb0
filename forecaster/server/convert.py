"""Proto <-> domain types, both directions, in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from forecaster.curves import Curve, Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import InvalidArgumentError, ResourceExhaustedError, shown
from forecaster.limits import Limits
from forecaster.models.prediction import ForecastSummary
from forecaster.policies import Action, Decision, Reason
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.store import DecisionChange, Run, RunSpec, RunState, Study, StudySpec

if TYPE_CHECKING:
    from forecaster.engine import Ranking, RunSummary

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
_ACTIONS = MappingProxyType(
    {
        Action.CONTINUE: pb.ACTION_CONTINUE,
        Action.STOP: pb.ACTION_STOP,
        Action.PAUSE: pb.ACTION_PAUSE,
    }
)
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


def struct_to_dict(s: struct_pb2.Struct, field: str, limits: Limits) -> dict[str, Any]:
    """A Struct as plain JSON; whole numbers become ints (Struct numbers are all doubles).

    Refused (INVALID_ARGUMENT, naming the key): more than max_config_bytes encoded, more than
    max_config_keys keys (nested ones counted), and NaN or infinity, which JSON cannot hold."""
    size = s.ByteSize()
    if size > limits.max_config_bytes:
        raise InvalidArgumentError(
            f"{field} is {size} bytes encoded; the limit max_config_bytes is "
            f"{limits.max_config_bytes}. Keep large values (data, tables) out of it."
        )
    keys = 0

    def value(v: struct_pb2.Value, path: str) -> Any:
        kind = v.WhichOneof("kind")
        if kind == "number_value":
            x = v.number_value
            if not math.isfinite(x):
                raise InvalidArgumentError(
                    f"{path} is {x}: JSON numbers must be finite; send it as a string "
                    '("nan", "inf") or leave the key out.'
                )
            return int(x) if x.is_integer() and abs(x) < 2**53 else x
        if kind == "struct_value":
            return struct(v.struct_value, path)
        if kind == "list_value":
            return [value(x, f"{path}[{i}]") for i, x in enumerate(v.list_value.values)]
        if kind == "string_value":
            return v.string_value
        if kind == "bool_value":
            return v.bool_value
        return None  # null_value, or a Value with nothing set

    def struct(m: struct_pb2.Struct, path: str) -> dict[str, Any]:
        nonlocal keys
        keys += len(m.fields)
        if keys > limits.max_config_keys:
            raise InvalidArgumentError(
                f"{field} has more than {limits.max_config_keys} keys (nested ones counted); "
                "that is the limit max_config_keys."
            )
        return {k: value(x, f"{path}.{shown(k, 40)[1:-1]}") for k, x in m.fields.items()}

    return struct(s, field)


def dict_to_struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _positive_or_none(v: int) -> int | None:
    return v if v > 0 else None


def schedule_from_proto(m: pb.LrSchedule, has: bool, limits: Limits) -> LrSchedule | None:
    if not has or m.kind == pb.SCHEDULE_KIND_UNSPECIFIED:
        return None
    if m.kind not in _KINDS_IN:
        raise InvalidArgumentError(f"lr_schedule: unknown kind {m.kind}.")
    limits.count("lr_schedule.steps", len(m.steps), "max_schedule_pairs")
    limits.count("lr_schedule.values", len(m.values), "max_schedule_pairs")
    for name in ("warmup_steps", "total_steps", "step_size"):
        limits.step(f"lr_schedule.{name}", getattr(m, name))
    for s in m.steps:
        limits.step("lr_schedule.steps", s)
    limits.keyword("lr_schedule.decay_shape", m.decay_shape)
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


def study_spec_from_proto(m: pb.StudySpec, limits: Limits) -> StudySpec:
    limits.name("study.name", m.name)
    where = f"study {m.name!r}"
    limits.metric(f"{where}: metric", m.metric)
    limits.keyword(f"{where}: policy.name", m.policy.name)
    limits.keyword(f"{where}: forecaster", m.forecaster)
    limits.step(f"{where}: max_step", m.max_step)
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
        policy_params=struct_to_dict(m.policy.params, f"{where}: policy.params", limits),
        forecaster=m.forecaster,
        metric_kind=m.metric_kind,
        metric_lower=m.metric_lower if m.HasField("metric_lower") else None,
        metric_upper=m.metric_upper if m.HasField("metric_upper") else None,
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
        metric_kind=s.metric_kind,
        metric_lower=s.metric_lower,
        metric_upper=s.metric_upper,
    )
    return pb.Study(spec=spec, created_at_s=study.created_at_s, n_runs=study.n_runs)


def run_spec_from_proto(m: pb.RunSpec, limits: Limits) -> RunSpec:
    limits.name("run.name", m.name)
    where = f"run {m.name!r}"
    limits.step(f"{where}: max_step", m.max_step)
    return RunSpec(
        name=m.name,
        config=struct_to_dict(m.config, f"{where}: config", limits),
        max_step=_positive_or_none(m.max_step),
        lr_schedule=schedule_from_proto(m.lr_schedule, m.HasField("lr_schedule"), limits),
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


def points_from_proto(
    points: Sequence[pb.Point], max_points: int, where: str, limits: Limits
) -> Points:
    """Validates a batch: size limit first (RESOURCE_EXHAUSTED), then the points themselves."""
    if len(points) > max_points:
        raise ResourceExhaustedError(
            f"{where}: the batch has {len(points)} points; the limit max_points_per_batch is "
            f"{max_points}. Split it into smaller batches."
        )
    if not points:
        raise InvalidArgumentError(f"{where}: the batch is empty; send at least one point.")
    for p in points:
        limits.step(f"{where}: point step", p.step)
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


def curve_from_request(m: pb.ForecastCurveRequest, max_points: int, limits: Limits) -> Curve:
    points = points_from_proto(m.points, max_points, "ForecastCurve", limits)
    limits.step("ForecastCurve: max_step", m.max_step)
    target = m.target if m.HasField("target") else None
    if target is not None and not math.isfinite(target):
        raise InvalidArgumentError(f"ForecastCurve: target must be finite; got {target}.")
    return Curve.from_points(
        points,
        direction_from_proto(m.direction, "ForecastCurve"),
        max_step=_positive_or_none(m.max_step),
        target=target,
        schedule=schedule_from_proto(m.lr_schedule, m.HasField("lr_schedule"), limits),
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


def forecast_steps(
    at_steps: Sequence[int], quantile_levels: Sequence[float], limits: Limits
) -> None:
    """at_steps and quantile_levels within their limits: the work of a forecast grows with them."""
    limits.count("at_steps", len(at_steps), "max_at_steps")
    limits.count("quantile_levels", len(quantile_levels), "max_quantile_levels")
    for s in at_steps:
        limits.step("at_steps", s)


def ranking_to_proto(ranking: Ranking) -> pb.RankRunsResponse:
    return pb.RankRunsResponse(
        runs=[
            pb.RankedRun(
                run=r.name,
                paused=r.paused,
                decision=None if r.decision is None else decision_to_proto(r.decision),
                last_step=r.last_step,
                remaining_steps=r.remaining_steps,
                expected_gain=r.expected_gain,
                gain_rate=r.gain_rate,
                forecast_final=r.forecast_final,
                prob_beat_incumbent=r.prob_beat_incumbent,
                reference=r.reference,
            )
            for r in ranking.runs
        ],
        incumbent=ranking.incumbent,
    )
