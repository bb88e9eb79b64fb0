"""The Store protocol, the values it keeps (studies, runs, points), and open_store(url).

Every write the service acknowledges is durable: a Store method that writes returns only
after its transaction has committed.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from forecaster.curves import Curve, Direction, LrSchedule, Points
from forecaster.errors import InvalidArgumentError
from forecaster.metric_kinds import MetricKind, kind_of

_MAX_NAME = 200


class RunState(enum.Enum):
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


def check_name(kind: str, name: str) -> str:
    """Names are 1-200 printable characters, so they show well in logs and URLs."""
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise InvalidArgumentError(
            f"{kind} name must be 1-{_MAX_NAME} printable characters; got {name!r}."
        )
    return name


def shown(value: Any) -> str:
    """A value as an error message shows it: an enum by its value ('min', not
    <Direction.MIN: 'min'>), anything else as repr."""
    if isinstance(value, enum.Enum):
        return repr(value.value)
    return repr(value)


def canonical_json(obj: Any) -> str:
    """One spelling per value, so that definitions compare by text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class StudySpec:
    """What a study is. Two specs are the same definition when they compare equal."""

    name: str
    metric: str
    direction: Direction
    max_step: int | None = None
    target: float | None = None
    policy: str = ""
    policy_params: dict[str, Any] = field(default_factory=dict, compare=False)
    forecaster: str = ""
    # issue 16: what kind of metric it is ("" inferred from metric and direction) and explicit
    # bounds (None: the kind's own); see forecaster/metric_kinds.py.
    metric_kind: str = ""
    metric_lower: float | None = None
    metric_upper: float | None = None

    def __post_init__(self) -> None:
        check_name("study", self.name)
        if not self.metric:
            raise InvalidArgumentError(f"study {self.name!r}: metric name is required.")
        if self.max_step is not None and self.max_step <= 0:
            raise InvalidArgumentError(
                f"study {self.name!r}: max_step must be > 0 (or unset); got {self.max_step}."
            )
        if self.target is not None and not math.isfinite(self.target):
            raise InvalidArgumentError(
                f"study {self.name!r}: target must be finite; got {self.target}."
            )
        try:
            self.kind  # noqa: B018 (validates the kind's name and bounds)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"study {self.name!r}: {e}") from None
        try:
            canonical_json(self.policy_params)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"study {self.name!r}: policy params must be plain JSON: {e}"
            ) from None

    @property
    def kind(self) -> MetricKind:
        """The metric's kind: as the study says, else inferred from its name and direction."""
        return kind_of(
            self.metric,
            self.direction is Direction.MIN,
            self.metric_kind,
            self.metric_lower,
            self.metric_upper,
        )

    def differences(self, other: StudySpec) -> list[str]:
        """Names of the fields whose values differ."""
        fields = ["metric", "direction", "max_step", "target", "policy", "forecaster"]
        fields += ["metric_kind", "metric_lower", "metric_upper"]
        diff = [f for f in fields if getattr(self, f) != getattr(other, f)]
        if canonical_json(self.policy_params) != canonical_json(other.policy_params):
            diff.append("policy_params")
        return diff


@dataclass(frozen=True)
class Study:
    spec: StudySpec
    created_at_s: float
    n_runs: int = 0
    n_done: int = 0  # runs no longer running: the study history changes only when it grows

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class RunSpec:
    """What a run is: its name, hyper-parameters, budget and planned schedule."""

    name: str
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    max_step: int | None = None
    lr_schedule: LrSchedule | None = None

    def __post_init__(self) -> None:
        check_name("run", self.name)
        if self.max_step is not None and self.max_step <= 0:
            raise InvalidArgumentError(
                f"run {self.name!r}: max_step must be > 0 (or unset); got {self.max_step}."
            )
        try:
            canonical_json(self.config)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"run {self.name!r}: config must be plain JSON: {e}"
            ) from None

    def differences(self, other: RunSpec) -> list[str]:
        diff = [f for f in ("max_step", "lr_schedule") if getattr(self, f) != getattr(other, f)]
        if canonical_json(self.config) != canonical_json(other.config):
            diff.insert(0, "config")
        return diff


@dataclass(frozen=True)
class StopRequest:
    """A person asked for the run to stop (StopRun): when, and the note they gave."""

    requested_at_s: float
    note: str = ""


@dataclass(frozen=True)
class Run:
    """A run as stored, with a summary of its points."""

    study: str
    spec: RunSpec
    state: RunState
    created_at_s: float
    finished_at_s: float | None = None
    n_points: int = 0
    last_step: int = -1
    last_value: float = math.nan
    best_value: float = math.nan
    stop_request: StopRequest | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class StoredDecision:
    """A run's latest decision as the store keeps it (plain values: the store knows no policy).

    fitted_points and votes_before let a restarted service count stop votes on from where it
    was: a decision on the same forecast recounts the same vote, a new forecast adds one.
    """

    at_step: int
    fitted_points: int
    votes_before: int
    votes: int
    action: str
    reason: str
    explanation: str
    probabilities: dict[str, float]
    expected_saved_steps: int
    policy: str
    forecast_final: float | None = None


@dataclass(frozen=True)
class DecisionChange:
    """One entry of a run's decision history: a decision whose action or reason differed
    from the one before it, as it was made."""

    index: int  # 0 for the run's first decision, then 1, 2, ...
    decided_at_s: float
    at_step: int
    action: str
    reason: str
    explanation: str
    probabilities: dict[str, float]
    policy: str
    forecast_final: float | None = None


@dataclass(frozen=True)
class AppendResult:
    """What append_points did: the run after it, and how many points were new."""

    run: Run
    n_stored: int
    previous_last_step: int
    new_points: Points


class Store(Protocol):
    """Studies, runs and points. Writes are durable when the method returns.

    tests/store/test_contract.py checks every backend against this contract; a new backend
    adds itself to its BACKENDS.
    """

    # Whether other service processes (replicas) may write to the same store: then a cached
    # decision is checked against the study's incumbent before it is answered (Engine).
    shared_by_replicas: ClassVar[bool]

    def create_study(self, spec: StudySpec) -> tuple[Study, bool]:
        """Creates or returns the identical study (created flag); else AlreadyExistsError."""
        ...

    def get_study(self, name: str) -> Study:
        """Loads a study. If nonexistent, raises NotFoundError."""
        ...

    def list_studies(self) -> list[Study]:
        """Every study, in creation order."""
        ...

    def start_run(self, study: str, spec: RunSpec) -> tuple[Run, bool]:
        """Creates or returns the identical run; AlreadyExistsError, NotFoundError."""
        ...

    def get_run(self, study: str, run: str) -> Run:
        """Loads a run. If nonexistent, raises NotFoundError."""
        ...

    def list_runs(self, study: str, *, state: RunState | None = None) -> list[Run]:
        """The study's runs in start order, only those in state when given; NotFoundError."""
        ...

    def append_points(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> AppendResult:
        """Appends atomically: all of the batch or nothing. An identical retry stores nothing.

        Raises InvalidArgumentError (steps conflict with stored ones), FailedPreconditionError
        (run not running), NotFoundError.
        """
        ...

    def get_points(
        self, study: str, run: str, *, after_step: int = -1, limit: int | None = None
    ) -> Points:
        """The run's points after after_step (all by default), in step order, at most limit."""
        ...

    def finish_run(self, study: str, run: str, state: RunState) -> Run:
        """Moves a running run to a final state; the same final state again is a no-op."""
        ...

    def save_decision(self, study: str, run: str, decision: StoredDecision) -> None:
        """Keeps the run's latest decision (replacing the one before) and, in the same
        transaction, appends it to the run's history when its action or reason differs from
        the one before (or it is the first); NotFoundError."""
        ...

    def decision_history(
        self, study: str, run: str, *, start: int = 0, limit: int | None = None
    ) -> list[DecisionChange]:
        """The run's decision changes from index start on, oldest first, at most limit;
        NotFoundError."""
        ...

    def request_stop(self, study: str, run: str, note: str = "") -> Run:
        """Records that a person asked the run to stop (the first request is kept: a second
        is a no-op) and returns the run; FailedPreconditionError when it is not running,
        NotFoundError."""
        ...

    def get_decision(self, study: str, run: str) -> StoredDecision | None:
        """The run's latest saved decision; None before its first."""
        ...

    def list_decisions(self, study: str) -> dict[str, StoredDecision]:
        """The latest saved decision of every run of the study that has one, by run name."""
        ...

    def best_standings(self, study: str, n: int = 2) -> list[tuple[str, float]]:
        """The n best standings (run name, value) of the study's runs, best first, in a bounded
        query. A run's standing is the value it offers the incumbent (judging.standing_of):
        none when it failed; its last value once done (not running, or at its budget); else
        its latest decision's forecast final value. Kept by every write that changes it."""
        ...

    def run_and_standings(
        self, study: str, run: str, n: int = 2
    ) -> tuple[Run, list[tuple[str, float]]]:
        """get_run and best_standings together, as one read where the store can (a replica
        asks both before it answers a cached decision: is it still the run's last report,
        and was it made against the incumbent the study has now?); NotFoundError."""
        ...

    def check(self) -> None:
        """Raises StoreUnavailableError when the store can no longer acknowledge writes (closed;
        for SQLite, its file deleted or replaced). The service's health follows it."""
        ...

    def close(self) -> None:
        """Flushes and closes. Further calls fail with StoreUnavailableError."""
        ...


def curve_of(study: Study, run: Run, points: Points) -> Curve:
    """The run's curve with the study's direction, budget and target."""
    return Curve.from_points(
        points,
        study.spec.direction,
        max_step=run.spec.max_step or study.spec.max_step,
        target=study.spec.target,
        schedule=run.spec.lr_schedule,
        config=run.spec.config,
        kind=study.spec.kind,
    )


def open_store(url: str, *, exclusive: bool = False, pool_size: int = 16) -> Store:
    """Opens the store a URL names: "sqlite:///path/to/file.db" (the embedded default; a bare
    file path means the same), or "postgresql://user@host:port/db" for several replicas.

    exclusive: the service's own open. SQLite: a lock file refuses a second service on the
    same file, and a corrupt file is refused. PostgreSQL is shared by design, so it ignores it.
    pool_size: PostgreSQL connections kept open.
    """
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from forecaster.store.postgres import PostgresStore
        except ImportError as e:
            raise InvalidArgumentError(
                f"a postgresql:// database needs psycopg ({e}): pip install 'forecaster[postgres]'."
            ) from None
        return PostgresStore(url, pool_size=pool_size)
    if url.startswith("sqlite://") or "://" not in url:
        from forecaster.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, exclusive=exclusive)
    raise InvalidArgumentError(
        f"unknown database URL {url!r}; use sqlite:///path/to/file.db (or a file path) or "
        "postgresql://user@host:port/database."
    )
