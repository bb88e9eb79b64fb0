"""The Store contract: every backend in BACKENDS passes every check here.

A backend runs the whole suite by its one entry in BACKENDS: a function that gives, for a
test's temporary folder (or the session's PostgreSQL server), the URL `open_store` opens it by
(a fresh database or schema per test). The backend's own checks (migrations, pragmas, file
permissions) live in its own file, as tests/store/test_sqlite.py and tests/store/test_postgres.py.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecaster.curves import Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    StoreUnavailableError,
)
from forecaster.judging import incumbent_of, standing_of
from forecaster.store import RunSpec, RunState, Store, StoredDecision, StudySpec, open_store
from forecaster.store.sqlite import CHUNK_POINTS

# backend name -> ((tmp_path, request) -> the URL of a fresh, empty store that survives
# close/reopen).
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], str]] = {
    "sqlite": lambda tmp_path, _: f"sqlite:///{tmp_path}/contract.db",  # a real file
    # A schema of its own on the session's private PostgreSQL server (tests/postgres.py).
    "postgresql": lambda _, request: request.getfixturevalue("postgres_server").fresh_url(),
}

FINAL_STATES = [s for s in RunState if s is not RunState.RUNNING]


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the test's store; each call opens it again (the same data), for reopen checks."""
    url = BACKENDS[request.param](tmp_path, request)
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(open_store(url))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(backend: Callable[[], Store]) -> Store:
    """A store with study "s" (minimize, max_step=100) and its running run "r"."""
    s = backend()
    s.create_study(StudySpec("s", "loss", Direction.MIN, max_step=100))
    s.start_run("s", RunSpec("r"))
    return s


def decision(at_step: int = 10, **kw: object) -> StoredDecision:
    fields: dict[str, object] = dict(
        at_step=at_step, fitted_points=at_step, votes_before=0, votes=1, action="continue",
        reason="promising", explanation="P(beat 0.4 by 100) = 0.3", probabilities={"p": 0.3},
        expected_saved_steps=0, policy="default", forecast_final=1.5,
    )  # fmt: skip
    fields.update(kw)
    return StoredDecision(**fields)  # type: ignore[arg-type]


# -- studies ----------------------------------------------------------------------------------


def test_create_study_returns_what_it_stored_and_get_study_reads_it(backend):
    store = backend()
    spec = StudySpec(
        "sweep", "acc", Direction.MAX, max_step=500, target=0.9, policy="unpromising",
        policy_params={"p": 0.05, "nested": {"k": [1, 2]}}, forecaster="power_law",
        metric_kind="accuracy", metric_lower=0.1, metric_upper=0.95,
    )  # fmt: skip
    study, created = store.create_study(spec)
    assert created and study.spec == spec and study.n_runs == 0
    got = store.get_study("sweep")
    assert got.spec == spec and got.spec.policy_params == spec.policy_params
    assert got.created_at_s == study.created_at_s and got.n_runs == 0
    assert got.spec.kind.bounds == (0.1, 0.95) and got.spec.kind.name == "accuracy"
    # Left empty, the kind is inferred from the metric and direction, and stored empty.
    store.create_study(StudySpec("plain", "val_loss", Direction.MIN))
    plain = store.get_study("plain").spec
    assert plain.metric_kind == "" and plain.metric_lower is None and plain.kind.name == "loss"


def test_create_study_is_idempotent(backend):
    store = backend()
    spec = StudySpec("s", "loss", Direction.MIN, policy_params={"a": 1, "b": 2})
    first, created = store.create_study(spec)
    same_params = StudySpec("s", "loss", Direction.MIN, policy_params={"b": 2, "a": 1})
    again, created_again = store.create_study(same_params)
    assert created and not created_again
    assert again.spec == first.spec and again.created_at_s == first.created_at_s
    assert [s.name for s in store.list_studies()] == ["s"]


@pytest.mark.parametrize(
    "field, other",
    [
        ("metric", {"metric": "acc"}),
        ("direction", {"direction": Direction.MAX}),
        ("max_step", {"max_step": 200}),
        ("target", {"target": 0.5}),
        ("policy", {"policy": "median"}),
        ("policy_params", {"policy_params": {"p": 0.1}}),
        ("forecaster", {"forecaster": "gbm"}),
        ("metric_kind", {"metric_kind": "loss"}),
        ("metric_upper", {"metric_upper": 10.0}),
    ],
)
def test_create_study_with_another_definition_is_refused_naming_the_field(backend, field, other):
    store = backend()
    base: dict[str, object] = dict(name="s", metric="loss", direction=Direction.MIN)
    store.create_study(StudySpec(**base))  # type: ignore[arg-type]
    with pytest.raises(AlreadyExistsError, match=field):
        store.create_study(StudySpec(**{**base, **other}))  # type: ignore[arg-type]
    assert store.get_study("s").spec == StudySpec(**base)  # type: ignore[arg-type]


def test_a_conflict_message_shows_enum_values_not_python_reprs(backend):
    store = backend()
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    with pytest.raises(AlreadyExistsError) as info:
        store.create_study(StudySpec("s", "loss", Direction.MAX))
    assert "direction='min'" in str(info.value) and "<Direction" not in str(info.value)


def test_list_studies_in_creation_order_with_their_run_counts(backend):
    store = backend()
    assert store.list_studies() == []
    for name in ("b", "a", "c"):
        store.create_study(StudySpec(name, "loss", Direction.MIN))
    for run in ("r1", "r2"):
        store.start_run("a", RunSpec(run))
    studies = store.list_studies()
    assert [s.name for s in studies] == ["b", "a", "c"]
    assert [s.n_runs for s in studies] == [0, 2, 0]
    assert store.get_study("a").n_runs == 2


# -- runs -------------------------------------------------------------------------------------


def test_start_run_returns_a_running_run_without_points(store):
    schedule = LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, total_steps=100)
    spec = RunSpec("new", {"lr": 1e-3, "layers": [2, 4]}, max_step=50, lr_schedule=schedule)
    run, created = store.start_run("s", spec)
    assert created and run.study == "s" and run.spec == spec and run.spec.config == spec.config
    assert run.state is RunState.RUNNING and run.finished_at_s is None
    assert (run.n_points, run.last_step) == (0, -1)
    assert math.isnan(run.last_value) and math.isnan(run.best_value)
    assert store.get_run("s", "new") == run
    assert len(store.get_points("s", "new")) == 0


def test_studies_and_runs_idempotent_by_name(store):
    study, created = store.create_study(StudySpec("s", "loss", Direction.MIN, max_step=100))
    assert not created and study.n_runs == 1
    with pytest.raises(AlreadyExistsError, match="max_step"):
        store.create_study(StudySpec("s", "loss", Direction.MIN, max_step=200))
    run, created = store.start_run("s", RunSpec("r"))
    assert not created
    with pytest.raises(AlreadyExistsError, match="config"):
        store.start_run("s", RunSpec("r", {"lr": 1}))
    schedule = LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, total_steps=100)
    replanned, created = store.start_run("s", RunSpec("r", lr_schedule=schedule))
    assert not created and replanned.spec.lr_schedule == schedule
    with pytest.raises(NotFoundError, match="CreateStudy"):
        store.start_run("nope", RunSpec("r"))


def test_start_run_again_keeps_the_points_and_refuses_another_budget(store):
    store.append_points("s", "r", Points.of([1, 2], [2.0, 1.0]))
    again, created = store.start_run("s", RunSpec("r"))
    assert not created and again.n_points == 2 and again.last_step == 2
    with pytest.raises(AlreadyExistsError, match="max_step"):
        store.start_run("s", RunSpec("r", max_step=10))
    assert store.get_run("s", "r").spec.max_step is None


def test_runs_of_the_same_name_in_two_studies_are_two_runs(store):
    store.create_study(StudySpec("t", "loss", Direction.MIN))
    store.start_run("t", RunSpec("r", {"other": True}))
    store.append_points("s", "r", Points.of([1], [1.0]))
    assert store.get_run("t", "r").n_points == 0 and store.get_run("t", "r").spec.config
    assert store.get_run("s", "r").n_points == 1 and not store.get_run("s", "r").spec.config


# -- not found --------------------------------------------------------------------------------

NOT_FOUND: dict[str, Callable[[Store, str, str], object]] = {
    "get_study": lambda s, study, run: s.get_study(study),
    "start_run": lambda s, study, run: s.start_run(study, RunSpec(run)),
    "get_run": lambda s, study, run: s.get_run(study, run),
    "list_runs": lambda s, study, run: s.list_runs(study),
    "append_points": lambda s, study, run: s.append_points(study, run, Points.of([1], [1.0])),
    "get_points": lambda s, study, run: s.get_points(study, run),
    "finish_run": lambda s, study, run: s.finish_run(study, run, RunState.FINISHED),
    "save_decision": lambda s, study, run: s.save_decision(study, run, decision()),
    "get_decision": lambda s, study, run: s.get_decision(study, run),
    "list_decisions": lambda s, study, run: s.list_decisions(study),
    "decision_history": lambda s, study, run: s.decision_history(study, run),
    "request_stop": lambda s, study, run: s.request_stop(study, run),
}
NEEDS_RUN = {"get_run", "append_points", "get_points", "finish_run", "save_decision",
             "get_decision", "decision_history", "request_stop"}  # fmt: skip


@pytest.mark.parametrize("method", sorted(NOT_FOUND))
def test_unknown_study_or_run_is_not_found_and_named(store, method):
    with pytest.raises(NotFoundError, match="'nope'"):
        NOT_FOUND[method](store, "nope", "r")
    if method in NEEDS_RUN:
        with pytest.raises(NotFoundError, match="'ghost'"):
            NOT_FOUND[method](store, "s", "ghost")
    assert [s.name for s in store.list_studies()] == ["s"]  # nothing created on the way
    assert [r.name for r in store.list_runs("s")] == ["r"]


# -- points -----------------------------------------------------------------------------------


def test_non_finite_values_round_trip_exactly(backend):
    s = backend()
    s.create_study(StudySpec("s", "loss", Direction.MIN))
    s.start_run("s", RunSpec("r"))
    values = [1.5, math.nan, math.inf, -math.inf, 0.0, -2.5e-300]
    s.append_points("s", "r", Points.of(range(6), values, lr=[0.1, None, 0.2, None, 0, 1e-5]))
    s.close()
    reopened = backend()
    got = reopened.get_points("s", "r")
    np.testing.assert_array_equal(got.values, np.array(values))  # NaN equals NaN here
    np.testing.assert_array_equal(got.lr, np.array([0.1, np.nan, 0.2, np.nan, 0, 1e-5]))
    run = reopened.get_run("s", "r")
    assert run.last_value == -2.5e-300 and run.best_value == -2.5e-300  # best of the finite
    reopened.close()


_names = itertools.count()


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_float_round_trips(store, values):
    # Every example runs on the test's one store (hypothesis keeps function-scoped fixtures),
    # so each gets a study of its own.
    name = f"h{next(_names)}"
    store.create_study(StudySpec(name, "loss", Direction.MAX))
    store.start_run(name, RunSpec("r"))
    store.append_points(name, "r", Points.of(range(len(values)), values))
    got = store.get_points(name, "r").values
    assert np.array_equal(got, np.array(values), equal_nan=True)
    finite = [v for v in values if math.isfinite(v)]
    best = store.get_run(name, "r").best_value
    assert (math.isnan(best) and not finite) or best == max(finite)


@pytest.mark.parametrize("last", [math.nan, math.inf, -math.inf, 0.25])
def test_the_last_value_keeps_its_kind(store, last):
    store.append_points("s", "r", Points.of([1, 2], [0.5, last]))
    run = store.get_run("s", "r")
    assert np.array_equal([run.last_value], [last], equal_nan=True)
    assert run.best_value == (0.25 if last == 0.25 else 0.5)


def test_lr_and_wall_time_round_trip_with_unknowns(store):
    batch = Points.of([0, 5, 9], [3.0, 2.0, 1.0], lr=[1e-3, None, 0.0], wall_time_s=[None, 2.5, 7])
    store.append_points("s", "r", batch)
    got = store.get_points("s", "r")
    assert got.steps.tolist() == [0, 5, 9] and got.values.tolist() == [3.0, 2.0, 1.0]
    np.testing.assert_array_equal(got.lr, [1e-3, np.nan, 0.0])
    np.testing.assert_array_equal(got.wall_time_s, [np.nan, 2.5, 7.0])


def test_best_value_follows_direction(backend):
    s = backend()
    for name, direction in (("min", Direction.MIN), ("max", Direction.MAX)):
        s.create_study(StudySpec(name, "m", direction))
        s.start_run(name, RunSpec("r"))
        s.append_points(name, "r", Points.of([1, 2, 3], [0.5, 0.2, 0.7]))
    assert s.get_run("min", "r").best_value == 0.2
    assert s.get_run("max", "r").best_value == 0.7


def test_best_value_carries_across_batches(store):
    store.append_points("s", "r", Points.of([1, 2], [0.5, 0.2]))
    store.append_points("s", "r", Points.of([3, 4], [0.7, math.nan]))
    run = store.get_run("s", "r")
    assert run.best_value == 0.2 and math.isnan(run.last_value) and run.n_points == 4


def test_batch_is_atomic(store):
    store.append_points("s", "r", Points.of([1, 2, 3], [3.0, 2.0, 1.0]))
    with pytest.raises(InvalidArgumentError, match="already stored"):
        store.append_points("s", "r", Points.of([3, 4], [1.5, 0.5]))
    with pytest.raises(InvalidArgumentError, match="never stored"):
        store.append_points("s", "r", Points.of([0, 4], [1.5, 0.5]))
    run = store.get_run("s", "r")
    assert run.n_points == 3 and run.last_step == 3
    assert store.get_points("s", "r").steps.tolist() == [1, 2, 3]


def test_a_refused_batch_changes_nothing_not_even_the_schedule(store):
    store.append_points("s", "r", Points.of([1, 2], [2.0, 1.0]))
    before = store.get_run("s", "r")
    schedule = LrSchedule(ScheduleKind.CONSTANT, peak_lr=0.1)
    with pytest.raises(InvalidArgumentError, match="already stored"):
        store.append_points("s", "r", Points.of([2, 3], [9.0, 0.5]), schedule)
    assert store.get_run("s", "r") == before and before.spec.lr_schedule is None
    with pytest.raises(InvalidArgumentError, match="empty"):
        store.append_points("s", "r", Points.of([], []))
    assert store.get_run("s", "r") == before


def test_retry_and_partial_overlap(store):
    first = store.append_points("s", "r", Points.of([1, 2, 3], [3.0, math.nan, 1.0]))
    again = store.append_points("s", "r", Points.of([1, 2, 3], [3.0, math.nan, 1.0]))
    more = store.append_points("s", "r", Points.of([3, 4], [1.0, 0.9]))
    assert (first.n_stored, again.n_stored, more.n_stored) == (3, 0, 1)
    assert more.previous_last_step == 3 and more.new_points.steps.tolist() == [4]
    assert store.get_run("s", "r").n_points == 4


def test_duplicates_are_stored_once(store):
    batch = Points.of([1, 2, 3], [3.0, math.inf, -math.inf])
    results = [store.append_points("s", "r", batch) for _ in range(3)]
    assert [r.n_stored for r in results] == [3, 0, 0]
    assert [r.previous_last_step for r in results] == [-1, 3, 3]
    assert len(results[1].new_points) == 0
    got = store.get_points("s", "r")
    assert got.steps.tolist() == [1, 2, 3] and store.get_run("s", "r").n_points == 3


def test_concurrent_identical_batches_are_stored_once(store):
    batch = Points.of(range(1, 51), np.linspace(3.0, 1.0, 50))
    stored: list[int] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        stored.append(store.append_points("s", "r", batch).n_stored)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(stored) == [0, 0, 0, 50]
    assert store.get_run("s", "r").n_points == 50 and len(store.get_points("s", "r")) == 50


def test_append_returns_the_run_as_stored(store):
    schedule = LrSchedule(ScheduleKind.CONSTANT, peak_lr=0.1)
    for batch, sched in (
        (Points.of([1, 2], [2.0, 1.0]), None),
        (Points.of([3], [math.nan]), schedule),
        (Points.of([3], [math.nan]), None),
    ):
        result = store.append_points("s", "r", batch, sched)
        stored = store.get_run("s", "r")
        assert result.run.spec == stored.spec and result.run.n_points == stored.n_points
        assert (result.run.last_step, result.run.best_value) == (
            stored.last_step,
            stored.best_value,
        )
        assert np.array_equal([result.run.last_value], [stored.last_value], equal_nan=True)


# -- finishing --------------------------------------------------------------------------------


def test_finish_run_states(store):
    with pytest.raises(InvalidArgumentError):
        store.finish_run("s", "r", RunState.RUNNING)
    run = store.finish_run("s", "r", RunState.STOPPED)
    assert run.state is RunState.STOPPED and run.finished_at_s is not None
    assert store.finish_run("s", "r", RunState.STOPPED).state is RunState.STOPPED
    with pytest.raises(FailedPreconditionError):
        store.finish_run("s", "r", RunState.FINISHED)
    with pytest.raises(FailedPreconditionError, match="stopped"):
        store.append_points("s", "r", Points.of([1], [1.0]))
    assert [r.name for r in store.list_runs("s", state=RunState.STOPPED)] == ["r"]


@pytest.mark.parametrize("state", FINAL_STATES, ids=lambda s: s.value)
def test_every_final_state_is_final(store, state):
    store.append_points("s", "r", Points.of([1, 2], [2.0, 1.0]))
    done = store.finish_run("s", "r", state)
    assert done.state is state and done.finished_at_s is not None
    assert (done.n_points, done.last_step, done.best_value) == (2, 2, 1.0)
    assert store.finish_run("s", "r", state) == done  # the same state again: a no-op
    assert store.get_run("s", "r") == done
    for other in FINAL_STATES:
        if other is not state:
            with pytest.raises(FailedPreconditionError, match=state.value):
                store.finish_run("s", "r", other)
    with pytest.raises(FailedPreconditionError, match=state.value):
        store.append_points("s", "r", Points.of([3], [0.5]))
    with pytest.raises(FailedPreconditionError, match=state.value):
        store.append_points("s", "r", Points.of([1, 2], [2.0, 1.0]))  # even a retry
    again, created = store.start_run("s", RunSpec("r"))
    assert not created and again.state is state  # starting it again does not revive it
    assert store.get_points("s", "r").steps.tolist() == [1, 2]


def test_list_runs_by_state_in_start_order(store):
    for name in ("b", "a", "c", "d"):
        store.start_run("s", RunSpec(name))
    store.finish_run("s", "a", RunState.FINISHED)
    store.finish_run("s", "c", RunState.STOPPED)
    store.finish_run("s", "d", RunState.FINISHED)
    assert [r.name for r in store.list_runs("s")] == ["r", "b", "a", "c", "d"]
    by_state = {state: [r.name for r in store.list_runs("s", state=state)] for state in RunState}
    assert by_state == {
        RunState.RUNNING: ["r", "b"],
        RunState.FINISHED: ["a", "d"],
        RunState.STOPPED: ["c"],
        RunState.FAILED: [],
    }
    assert all(r.state is RunState.FINISHED for r in store.list_runs("s", state=RunState.FINISHED))


# -- decisions --------------------------------------------------------------------------------


def test_latest_decision_per_run_survives_reopening(backend):
    store = backend()
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    for run in ("a", "b"):
        store.start_run("s", RunSpec(run))
    assert store.get_decision("s", "a") is None and store.list_decisions("s") == {}
    first = StoredDecision(
        at_step=10, fitted_points=10, votes_before=0, votes=1, action="continue",
        reason="promising", explanation="vote 1", probabilities={"p": 0.1},
        expected_saved_steps=0, policy="f", forecast_final=1.5,
    )  # fmt: skip
    store.save_decision("s", "a", first)
    later = StoredDecision(
        at_step=20, fitted_points=11, votes_before=1, votes=2, action="stop",
        reason="unpromising", explanation="stop", probabilities={"p": 0.01},
        expected_saved_steps=80, policy="f",
    )  # fmt: skip
    store.save_decision("s", "a", later)  # replaces: only the latest is kept
    store.close()
    store = backend()
    assert store.get_decision("s", "a") == later
    assert store.list_decisions("s") == {"a": later}
    with pytest.raises(NotFoundError):
        store.save_decision("s", "nobody", first)
    store.close()


def test_decisions_round_trip_field_by_field(store):
    store.start_run("s", RunSpec("q"))
    saved = {
        "r": decision(7, probabilities={"p_reach_target": 0.01, "p_beat": 1}, forecast_final=-3.5),
        "q": decision(9, action="stop", reason="diverged", votes_before=2, votes=3,
                      expected_saved_steps=91, forecast_final=None, probabilities={}),
    }  # fmt: skip
    for run, d in saved.items():
        store.save_decision("s", run, d)
    assert {run: store.get_decision("s", run) for run in saved} == saved
    assert store.list_decisions("s") == saved
    for run, d in saved.items():
        got = store.get_decision("s", run)
        assert got is not None and got.probabilities == d.probabilities
    got = store.get_decision("s", "r")
    assert got is not None and got.explanation == "P(beat 0.4 by 100) = 0.3"


@pytest.mark.parametrize("final", [math.nan, math.inf, -math.inf])
def test_a_non_finite_forecast_final_reads_back_as_none(store, final):
    store.save_decision("s", "r", decision(forecast_final=final))
    got = store.get_decision("s", "r")
    assert got is not None and got.forecast_final is None


def test_decisions_of_a_study_only(store):
    store.create_study(StudySpec("t", "loss", Direction.MIN))
    store.start_run("t", RunSpec("r"))
    store.save_decision("t", "r", decision(3))
    assert store.list_decisions("s") == {} and store.get_decision("s", "r") is None
    assert store.list_decisions("t") == {"r": decision(3)}


# -- decision history and manual stops ---------------------------------------------------------


def test_history_keeps_every_change_of_action_or_reason_only(store):
    assert store.decision_history("s", "r") == []
    sequence = [
        decision(5, reason="warmup", explanation="too early"),
        decision(6, reason="warmup", explanation="still too early"),  # same: not a change
        decision(10, reason="promising", probabilities={"p_beat_incumbent": 0.4}),
        decision(20, reason="promising", probabilities={"p_beat_incumbent": 0.3}),
        decision(30, action="stop", reason="unpromising", explanation="P = 0.01 < 0.05",
                 forecast_final=2.5),
    ]  # fmt: skip
    for d in sequence:
        store.save_decision("s", "r", d)
    history = store.decision_history("s", "r")
    assert [(h.index, h.at_step, h.action, h.reason) for h in history] == [
        (0, 5, "continue", "warmup"),
        (1, 10, "continue", "promising"),
        (2, 30, "stop", "unpromising"),
    ]
    first, _, last = history
    assert first.explanation == "too early" and last.explanation == "P = 0.01 < 0.05"
    assert history[1].probabilities == {"p_beat_incumbent": 0.4}
    assert last.forecast_final == 2.5 and last.policy == "default"
    assert all(h.decided_at_s > 0 for h in history)
    assert history == sorted(history, key=lambda h: h.decided_at_s)
    # the latest decision is still the last one saved, not the last change
    assert store.get_decision("s", "r") == sequence[-1]


def test_history_pages_by_index_and_survives_reopening(backend):
    store = backend()
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    store.start_run("s", RunSpec("r"))
    store.start_run("s", RunSpec("other"))
    reasons = ["warmup", "promising", "unpromising", "promising", "converged"]
    for i, reason in enumerate(reasons):
        store.save_decision("s", "r", decision(10 * (i + 1), reason=reason))
    store.save_decision("s", "other", decision(1, reason="diverged"))
    store.close()
    store = backend()
    assert [h.reason for h in store.decision_history("s", "r")] == reasons
    page = store.decision_history("s", "r", start=1, limit=2)
    assert [(h.index, h.reason) for h in page] == [(1, "promising"), (2, "unpromising")]
    assert [h.index for h in store.decision_history("s", "r", start=4, limit=10)] == [4]
    assert store.decision_history("s", "r", start=5) == []
    assert [h.reason for h in store.decision_history("s", "other")] == ["diverged"]


def test_a_stop_request_is_kept_once_and_read_with_the_run(backend):
    store = backend()
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    store.start_run("s", RunSpec("r"))
    store.start_run("s", RunSpec("q"))
    assert store.get_run("s", "r").stop_request is None
    run = store.request_stop("s", "r", "alice: loss spike")
    assert run.stop_request is not None and run.stop_request.note == "alice: loss spike"
    assert run.state is RunState.RUNNING  # the trainer still reports until it stops
    again = store.request_stop("s", "r", "bob")  # the first request is kept
    assert again.stop_request == run.stop_request
    store.append_points("s", "r", Points.of([1], [1.0]))  # a stopping run still takes points
    store.close()
    store = backend()
    assert store.get_run("s", "r").stop_request == run.stop_request
    assert {r.name: r.stop_request for r in store.list_runs("s")} == {
        "r": run.stop_request,
        "q": None,
    }
    store.finish_run("s", "q", RunState.FINISHED)
    with pytest.raises(FailedPreconditionError, match="finished"):
        store.request_stop("s", "q")
    assert store.get_run("s", "q").stop_request is None


def test_points_page_after_a_step(store):
    store.append_points("s", "r", Points.of([1, 2, 5, 9, 12], [5.0, math.nan, 3.0, 2.0, 1.0]))
    page = store.get_points("s", "r", limit=2)
    assert page.steps.tolist() == [1, 2] and math.isnan(page.values[1])
    page = store.get_points("s", "r", after_step=2, limit=2)
    assert page.steps.tolist() == [5, 9] and page.values.tolist() == [3.0, 2.0]
    assert store.get_points("s", "r", after_step=9).steps.tolist() == [12]
    assert len(store.get_points("s", "r", after_step=12)) == 0
    assert store.get_points("s", "r").steps.tolist() == [1, 2, 5, 9, 12]


# -- durability and closing -------------------------------------------------------------------


def test_everything_acknowledged_survives_reopening(backend):
    first = backend()
    first.create_study(StudySpec("s", "acc", Direction.MAX, max_step=9, policy_params={"p": 1}))
    schedule = LrSchedule(ScheduleKind.LINEAR, peak_lr=0.5, total_steps=9)
    first.start_run("s", RunSpec("a", {"lr": 0.5}, max_step=9, lr_schedule=schedule))
    first.start_run("s", RunSpec("b"))
    first.append_points("s", "a", Points.of([1, 2], [0.1, math.nan], lr=[0.5, None]))
    first.append_points("s", "b", Points.of([4], [0.3], wall_time_s=[12.5]))
    first.finish_run("s", "b", RunState.FAILED)
    first.save_decision("s", "a", decision(2))
    before = (first.list_studies(), first.list_runs("s"), first.list_decisions("s"))
    points_before = {run: first.get_points("s", run) for run in ("a", "b")}
    first.close()
    second = backend()
    assert (second.list_studies(), second.list_runs("s"), second.list_decisions("s")) == before
    for run, pts in points_before.items():
        got = second.get_points("s", run)
        for name in ("steps", "values", "lr", "wall_time_s"):
            np.testing.assert_array_equal(getattr(got, name), getattr(pts, name))
    second.append_points("s", "a", Points.of([1, 2, 3], [0.1, math.nan, 0.4]))  # goes on
    assert second.get_run("s", "a").n_points == 3 and second.get_run("s", "a").best_value == 0.4


def test_two_stores_on_the_same_place_see_each_others_writes(backend):
    one, two = backend(), backend()
    one.create_study(StudySpec("s", "loss", Direction.MIN))
    two.start_run("s", RunSpec("r"))
    one.append_points("s", "r", Points.of([1], [1.0]))
    assert two.get_run("s", "r").n_points == 1
    with pytest.raises(InvalidArgumentError, match="already stored"):
        two.append_points("s", "r", Points.of([1], [2.0]))


def test_a_closed_store_refuses_every_call(store):
    store.close()
    store.close()  # closing twice is fine
    for call in NOT_FOUND.values():
        with pytest.raises(StoreUnavailableError, match="closed"):
            call(store, "s", "r")
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.create_study(StudySpec("t", "loss", Direction.MIN))
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.list_studies()


# -- summary rows: what a decision reads, kept by the writes ---------------------------------


def _incumbent_from_everything(store: Store, study: str, run: str) -> float | None:
    """The incumbent as judging computes it from every run and decision (the replay's way)."""
    spec = store.get_study(study).spec
    decisions = store.list_decisions(study)
    return incumbent_of(
        spec.direction,
        (
            standing_of(r, r.spec.max_step or spec.max_step, decisions.get(r.name))
            for r in store.list_runs(study)
            if r.name != run
        ),
    )


@pytest.mark.parametrize("direction", list(Direction))
def test_best_standings_give_the_incumbent_judging_computes(backend, direction):
    store = backend()
    store.create_study(StudySpec("s", "loss", direction, max_step=50))
    rng = np.random.default_rng(7)
    names = [f"r{i}" for i in range(12)]
    for name in names:
        store.start_run("s", RunSpec(name, max_step=int(rng.choice([0, 30])) or None))
    for i in range(80):  # appends, decisions, finishes in a random order
        name = names[int(rng.integers(len(names)))]
        run = store.get_run("s", name)
        kind = rng.integers(4)
        if run.state is RunState.RUNNING and kind <= 1:
            step = run.last_step + 1 + int(rng.integers(20))
            value = float(rng.choice([rng.normal(), math.nan, math.inf]))
            store.append_points("s", name, Points.of([step], [value]))
        elif run.state is RunState.RUNNING and kind == 2:
            final = float(rng.choice([rng.normal(), math.nan]))
            store.save_decision("s", name, decision(i, forecast_final=final))
        elif run.state is RunState.RUNNING:
            store.finish_run("s", name, FINAL_STATES[int(rng.integers(len(FINAL_STATES)))])
        for probe in names[:4]:
            got = next((v for n, v in store.best_standings("s", 2) if n != probe), None)
            assert got == _incumbent_from_everything(store, "s", probe)
    reopened = backend()
    assert reopened.best_standings("s", 5) == store.best_standings("s", 5)


def test_best_standings_are_bounded_and_ordered(store):
    for i, value in enumerate([0.5, 0.2, 0.9]):
        store.start_run("s", RunSpec(f"q{i}"))
        store.append_points("s", f"q{i}", Points.of([1], [value]))
        store.finish_run("s", f"q{i}", RunState.FINISHED)
    assert store.best_standings("s", 2) == [("q1", 0.2), ("q0", 0.5)]
    with pytest.raises(NotFoundError, match="nope"):
        store.best_standings("nope")


@pytest.mark.parametrize("direction", list(Direction))
def test_run_and_standings_read_what_get_run_and_best_standings_read(backend, direction):
    store = backend()
    store.create_study(StudySpec("s", "loss", direction, max_step=50))
    for i, value in enumerate([0.5, 0.2, 0.9, math.nan]):
        store.start_run("s", RunSpec(f"q{i}", config={"i": i}))
        store.append_points("s", f"q{i}", Points.of([1, 2], [value + 1, value]))
        if i % 2:
            store.finish_run("s", f"q{i}", RunState.FINISHED)
    for n in (1, 2, 3):
        for run in ("q0", "q1", "q3"):
            got_run, got_best = store.run_and_standings("s", run, n)
            assert got_run == store.get_run("s", run)
            assert got_best == store.best_standings("s", n)
    store.append_points("s", "q0", Points.of([3], [0.1]))  # the run's row is a new version
    assert store.run_and_standings("s", "q0")[0] == store.get_run("s", "q0")
    assert store.run_and_standings("s", "q0")[0].last_step == 3
    with pytest.raises(NotFoundError, match="nope"):
        store.run_and_standings("s", "nope")
    with pytest.raises(NotFoundError, match="nope"):
        store.run_and_standings("nope", "q0")


def test_study_counts_runs_and_done_runs(store):
    store.start_run("s", RunSpec("r2"))
    store.start_run("s", RunSpec("r2"))  # idempotent: counted once
    store.finish_run("s", "r2", RunState.STOPPED)
    store.finish_run("s", "r2", RunState.STOPPED)  # a no-op
    study = store.get_study("s")
    assert (study.n_runs, study.n_done) == (2, 1)
    assert [(s.n_runs, s.n_done) for s in store.list_studies()] == [(2, 1)]


def test_two_stores_appending_to_one_run_at_once_lose_and_duplicate_nothing(backend):
    """Two replicas on one store, each retrying its batches: every point once, in order."""
    one, two = backend(), backend()
    one.create_study(StudySpec("s", "loss", Direction.MIN))
    one.start_run("s", RunSpec("r"))
    batches = [Points.of(range(i * 5, i * 5 + 5), np.linspace(2, 1, 5)) for i in range(40)]
    errors: list[BaseException] = []

    def send(store: Store) -> None:
        try:
            for batch in batches:
                for _ in range(2):  # every batch twice: a retry after a lost answer
                    store.append_points("s", "r", batch)
        except BaseException as e:  # pragma: no cover - shown by the assert
            errors.append(e)

    threads = [threading.Thread(target=send, args=(s,)) for s in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    got = one.get_points("s", "r")
    assert got.steps.tolist() == list(range(200))
    assert two.get_run("s", "r").n_points == 200


def test_a_long_run_reads_back_exactly_across_packed_chunks(backend):
    """Points pack into chunks as a run grows (store/sqlite.py CHUNK_POINTS): a long run reads
    back point for point, NaN, inf and unknown lr included, across a reopen."""
    store = backend()
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    store.start_run("s", RunSpec("r"))
    n = 2 * CHUNK_POINTS + 123
    rng = np.random.default_rng(3)
    steps = np.cumsum(rng.integers(1, 4, n))
    values = rng.normal(size=n)
    values[::97] = math.nan
    values[5::131] = math.inf
    lr = np.where(rng.uniform(size=n) < 0.5, rng.uniform(size=n), math.nan)
    for lo in range(0, n, 1000):  # batches that straddle the chunk boundaries
        sl = slice(lo, lo + 1000)
        store.append_points("s", "r", Points(steps[sl], values[sl], lr[sl], steps[sl] * 0.5))
    store.append_points("s", "r", Points(steps[:10], values[:10], lr[:10], steps[:10] * 0.5))
    for got in (store.get_points("s", "r"), backend().get_points("s", "r")):
        np.testing.assert_array_equal(got.steps, steps)
        np.testing.assert_array_equal(got.values, values)
        np.testing.assert_array_equal(got.lr, lr)
        np.testing.assert_array_equal(got.wall_time_s, steps * 0.5)
    assert store.get_run("s", "r").n_points == n
