from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_MINIMIZE: _ClassVar[Direction]
    DIRECTION_MAXIMIZE: _ClassVar[Direction]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_FINISHED: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_CONTINUE: _ClassVar[Action]
    ACTION_STOP: _ClassVar[Action]
    ACTION_PAUSE: _ClassVar[Action]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_WARMUP: _ClassVar[Reason]
    REASON_DIVERGED: _ClassVar[Reason]
    REASON_TARGET_UNREACHABLE: _ClassVar[Reason]
    REASON_UNPROMISING: _ClassVar[Reason]
    REASON_CONVERGED: _ClassVar[Reason]
    REASON_TARGET_REACHED: _ClassVar[Reason]
    REASON_BUDGET_EXHAUSTED: _ClassVar[Reason]
    REASON_PROMISING: _ClassVar[Reason]
    REASON_MANUAL: _ClassVar[Reason]
    REASON_UNCERTAIN: _ClassVar[Reason]
    REASON_NOT_LEARNING: _ClassVar[Reason]

class ScheduleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_KIND_UNSPECIFIED: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_EXPLICIT: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_CONSTANT: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_COSINE: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_LINEAR: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_WSD: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_STEP: _ClassVar[ScheduleKind]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_MINIMIZE: Direction
DIRECTION_MAXIMIZE: Direction
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_FINISHED: RunState
RUN_STATE_STOPPED: RunState
RUN_STATE_FAILED: RunState
ACTION_UNSPECIFIED: Action
ACTION_CONTINUE: Action
ACTION_STOP: Action
ACTION_PAUSE: Action
REASON_UNSPECIFIED: Reason
REASON_WARMUP: Reason
REASON_DIVERGED: Reason
REASON_TARGET_UNREACHABLE: Reason
REASON_UNPROMISING: Reason
REASON_CONVERGED: Reason
REASON_TARGET_REACHED: Reason
REASON_BUDGET_EXHAUSTED: Reason
REASON_PROMISING: Reason
REASON_MANUAL: Reason
REASON_UNCERTAIN: Reason
REASON_NOT_LEARNING: Reason
SCHEDULE_KIND_UNSPECIFIED: ScheduleKind
SCHEDULE_KIND_EXPLICIT: ScheduleKind
SCHEDULE_KIND_CONSTANT: ScheduleKind
SCHEDULE_KIND_COSINE: ScheduleKind
SCHEDULE_KIND_LINEAR: ScheduleKind
SCHEDULE_KIND_WSD: ScheduleKind
SCHEDULE_KIND_STEP: ScheduleKind

class LrSchedule(_message.Message):
    __slots__ = ("kind", "peak_lr", "final_lr", "warmup_steps", "total_steps", "decay_fraction", "decay_shape", "step_size", "gamma", "steps", "values")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PEAK_LR_FIELD_NUMBER: _ClassVar[int]
    FINAL_LR_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    DECAY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    DECAY_SHAPE_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    kind: ScheduleKind
    peak_lr: float
    final_lr: float
    warmup_steps: int
    total_steps: int
    decay_fraction: float
    decay_shape: str
    step_size: int
    gamma: float
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[_Union[ScheduleKind, str]] = ..., peak_lr: _Optional[float] = ..., final_lr: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., decay_fraction: _Optional[float] = ..., decay_shape: _Optional[str] = ..., step_size: _Optional[int] = ..., gamma: _Optional[float] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class PolicySettings(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class StudySpec(_message.Message):
    __slots__ = ("name", "metric", "direction", "max_step", "target", "policy", "forecaster", "metric_kind", "metric_lower", "metric_upper")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FORECASTER_FIELD_NUMBER: _ClassVar[int]
    METRIC_KIND_FIELD_NUMBER: _ClassVar[int]
    METRIC_LOWER_FIELD_NUMBER: _ClassVar[int]
    METRIC_UPPER_FIELD_NUMBER: _ClassVar[int]
    name: str
    metric: str
    direction: Direction
    max_step: int
    target: float
    policy: PolicySettings
    forecaster: str
    metric_kind: str
    metric_lower: float
    metric_upper: float
    def __init__(self, name: _Optional[str] = ..., metric: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., max_step: _Optional[int] = ..., target: _Optional[float] = ..., policy: _Optional[_Union[PolicySettings, _Mapping]] = ..., forecaster: _Optional[str] = ..., metric_kind: _Optional[str] = ..., metric_lower: _Optional[float] = ..., metric_upper: _Optional[float] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("spec", "created_at_s", "n_runs")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_S_FIELD_NUMBER: _ClassVar[int]
    N_RUNS_FIELD_NUMBER: _ClassVar[int]
    spec: StudySpec
    created_at_s: float
    n_runs: int
    def __init__(self, spec: _Optional[_Union[StudySpec, _Mapping]] = ..., created_at_s: _Optional[float] = ..., n_runs: _Optional[int] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("name", "config", "max_step", "lr_schedule")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _struct_pb2.Struct
    max_step: int
    lr_schedule: LrSchedule
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_step: _Optional[int] = ..., lr_schedule: _Optional[_Union[LrSchedule, _Mapping]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("study", "spec", "state", "n_points", "last_step", "last_value", "best_value", "created_at_s", "finished_at_s")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_S_FIELD_NUMBER: _ClassVar[int]
    study: str
    spec: RunSpec
    state: RunState
    n_points: int
    last_step: int
    last_value: float
    best_value: float
    created_at_s: float
    finished_at_s: float
    def __init__(self, study: _Optional[str] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., n_points: _Optional[int] = ..., last_step: _Optional[int] = ..., last_value: _Optional[float] = ..., best_value: _Optional[float] = ..., created_at_s: _Optional[float] = ..., finished_at_s: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("step", "value", "lr", "wall_time_s")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    step: int
    value: float
    lr: float
    wall_time_s: float
    def __init__(self, step: _Optional[int] = ..., value: _Optional[float] = ..., lr: _Optional[float] = ..., wall_time_s: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("action", "reason", "explanation", "probabilities", "expected_saved_steps", "at_step", "policy")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SAVED_STEPS_FIELD_NUMBER: _ClassVar[int]
    AT_STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    action: Action
    reason: Reason
    explanation: str
    probabilities: _containers.ScalarMap[str, float]
    expected_saved_steps: int
    at_step: int
    policy: str
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., explanation: _Optional[str] = ..., probabilities: _Optional[_Mapping[str, float]] = ..., expected_saved_steps: _Optional[int] = ..., at_step: _Optional[int] = ..., policy: _Optional[str] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("steps", "quantile_levels", "quantiles", "mean", "prob_reach_target", "model", "model_version", "converged", "notes", "observed_until_step", "steps_to_target")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    PROB_REACH_TARGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_UNTIL_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileRow]
    mean: _containers.RepeatedScalarFieldContainer[float]
    prob_reach_target: float
    model: str
    model_version: int
    converged: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    observed_until_step: int
    steps_to_target: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, steps: _Optional[_Iterable[int]] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., quantiles: _Optional[_Iterable[_Union[QuantileRow, _Mapping]]] = ..., mean: _Optional[_Iterable[float]] = ..., prob_reach_target: _Optional[float] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., converged: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ..., observed_until_step: _Optional[int] = ..., steps_to_target: _Optional[_Iterable[int]] = ...) -> None: ...

class QuantileRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class CreateStudyRequest(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: StudySpec
    def __init__(self, study: _Optional[_Union[StudySpec, _Mapping]] = ...) -> None: ...

class CreateStudyResponse(_message.Message):
    __slots__ = ("study", "created")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    study: Study
    created: bool
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("study", "run")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: RunSpec
    def __init__(self, study: _Optional[str] = ..., run: _Optional[_Union[RunSpec, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run", "created")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run: Run
    created: bool
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ReportMetricsRequest(_message.Message):
    __slots__ = ("study", "run", "points", "lr_schedule")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    lr_schedule: LrSchedule
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., lr_schedule: _Optional[_Union[LrSchedule, _Mapping]] = ...) -> None: ...

class ReportMetricsResponse(_message.Message):
    __slots__ = ("decision", "n_stored", "last_step")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    N_STORED_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    n_stored: int
    last_step: int
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., n_stored: _Optional[int] = ..., last_step: _Optional[int] = ...) -> None: ...

class StreamMetricsResponse(_message.Message):
    __slots__ = ("study", "run", "decision", "last_step")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    decision: Decision
    last_step: int
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., last_step: _Optional[int] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("study", "run", "at_steps", "quantile_levels", "path_points")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    AT_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    PATH_POINTS_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    at_steps: _containers.RepeatedScalarFieldContainer[int]
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    path_points: int
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., at_steps: _Optional[_Iterable[int]] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., path_points: _Optional[int] = ...) -> None: ...

class GetForecastResponse(_message.Message):
    __slots__ = ("forecast", "path")
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    forecast: Forecast
    path: Forecast
    def __init__(self, forecast: _Optional[_Union[Forecast, _Mapping]] = ..., path: _Optional[_Union[Forecast, _Mapping]] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("study", "run")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ...) -> None: ...

class GetDecisionResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class FinishRunRequest(_message.Message):
    __slots__ = ("study", "run", "state")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    state: RunState
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ...) -> None: ...

class FinishRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("study", "run")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("study", "state", "page_size", "page_token")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study: str
    state: RunState
    page_size: int
    page_token: str
    def __init__(self, study: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStudyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies", "next_page_token")
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[Study]
    next_page_token: str
    def __init__(self, studies: _Optional[_Iterable[_Union[Study, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ForecastCurveRequest(_message.Message):
    __slots__ = ("points", "direction", "max_step", "at_steps", "quantile_levels", "target", "forecaster", "lr_schedule")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    AT_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FORECASTER_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    direction: Direction
    max_step: int
    at_steps: _containers.RepeatedScalarFieldContainer[int]
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    target: float
    forecaster: str
    lr_schedule: LrSchedule
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., direction: _Optional[_Union[Direction, str]] = ..., max_step: _Optional[int] = ..., at_steps: _Optional[_Iterable[int]] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., target: _Optional[float] = ..., forecaster: _Optional[str] = ..., lr_schedule: _Optional[_Union[LrSchedule, _Mapping]] = ...) -> None: ...

class ForecastCurveResponse(_message.Message):
    __slots__ = ("forecast",)
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    forecast: Forecast
    def __init__(self, forecast: _Optional[_Union[Forecast, _Mapping]] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("study", "run", "note")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    note: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class ListPointsRequest(_message.Message):
    __slots__ = ("study", "run", "page_size", "page_token")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    page_size: int
    page_token: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPointsResponse(_message.Message):
    __slots__ = ("points", "next_page_token")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    next_page_token: str
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DecisionChange(_message.Message):
    __slots__ = ("decision", "decided_at_s", "forecast_final")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_S_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FINAL_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    decided_at_s: float
    forecast_final: float
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., decided_at_s: _Optional[float] = ..., forecast_final: _Optional[float] = ...) -> None: ...

class ListDecisionHistoryRequest(_message.Message):
    __slots__ = ("study", "run", "page_size", "page_token")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    page_size: int
    page_token: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionHistoryResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[DecisionChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[DecisionChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run", "decision", "forecast", "prob_beat_incumbent", "incumbent", "saved_steps")
    RUN_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    PROB_BEAT_INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    SAVED_STEPS_FIELD_NUMBER: _ClassVar[int]
    run: Run
    decision: Decision
    forecast: Forecast
    prob_beat_incumbent: float
    incumbent: float
    saved_steps: int
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., forecast: _Optional[_Union[Forecast, _Mapping]] = ..., prob_beat_incumbent: _Optional[float] = ..., incumbent: _Optional[float] = ..., saved_steps: _Optional[int] = ...) -> None: ...

class ListRunSummariesRequest(_message.Message):
    __slots__ = ("study", "page_size", "page_token")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study: str
    page_size: int
    page_token: str
    def __init__(self, study: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunSummariesResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunSummary]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRunSummaryRequest(_message.Message):
    __slots__ = ("study", "run")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    study: str
    run: str
    def __init__(self, study: _Optional[str] = ..., run: _Optional[str] = ...) -> None: ...

class GetRunSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: RunSummary
    def __init__(self, summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class RankRunsRequest(_message.Message):
    __slots__ = ("study", "limit")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    study: str
    limit: int
    def __init__(self, study: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class RankedRun(_message.Message):
    __slots__ = ("run", "paused", "decision", "last_step", "remaining_steps", "expected_gain", "gain_rate", "forecast_final", "prob_beat_incumbent", "reference")
    RUN_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    REMAINING_STEPS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GAIN_FIELD_NUMBER: _ClassVar[int]
    GAIN_RATE_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FINAL_FIELD_NUMBER: _ClassVar[int]
    PROB_BEAT_INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    run: str
    paused: bool
    decision: Decision
    last_step: int
    remaining_steps: int
    expected_gain: float
    gain_rate: float
    forecast_final: float
    prob_beat_incumbent: float
    reference: str
    def __init__(self, run: _Optional[str] = ..., paused: _Optional[bool] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., last_step: _Optional[int] = ..., remaining_steps: _Optional[int] = ..., expected_gain: _Optional[float] = ..., gain_rate: _Optional[float] = ..., forecast_final: _Optional[float] = ..., prob_beat_incumbent: _Optional[float] = ..., reference: _Optional[str] = ...) -> None: ...

class RankRunsResponse(_message.Message):
    __slots__ = ("runs", "incumbent")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RankedRun]
    incumbent: float
    def __init__(self, runs: _Optional[_Iterable[_Union[RankedRun, _Mapping]]] = ..., incumbent: _Optional[float] = ...) -> None: ...
