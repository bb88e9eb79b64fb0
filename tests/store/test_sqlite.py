"""SqliteStore on a real SQLite file: round trips, atomicity, idempotency, migrations."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.curves import Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    StoreUnavailableError,
)
from forecaster.store import RunSpec, RunState, StudySpec, open_store
from forecaster.store.schema import LATEST_VERSION
from forecaster.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "runs.db")
    s.create_study(StudySpec("s", "loss", Direction.MIN, max_step=100))
    s.start_run("s", RunSpec("r"))
    yield s
    s.close()


def test_wal_mode_and_full_sync(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_non_finite_values_round_trip_exactly(tmp_path):
    path = tmp_path / "nan.db"
    s = SqliteStore(path)
    s.create_study(StudySpec("s", "loss", Direction.MIN))
    s.start_run("s", RunSpec("r"))
    values = [1.5, math.nan, math.inf, -math.inf, 0.0, -2.5e-300]
    s.append_points("s", "r", Points.of(range(6), values, lr=[0.1, None, 0.2, None, 0, 1e-5]))
    s.close()
    reopened = SqliteStore(path)
    got = reopened.get_points("s", "r")
    np.testing.assert_array_equal(got.values, np.array(values))  # NaN equals NaN here
    np.testing.assert_array_equal(got.lr, np.array([0.1, np.nan, 0.2, np.nan, 0, 1e-5]))
    run = reopened.get_run("s", "r")
    assert run.last_value == -2.5e-300 and run.best_value == -2.5e-300  # best of the finite
    reopened.close()


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30))
@settings(max_examples=40, deadline=None)
def test_any_float_round_trips(tmp_path_factory, values):
    s = SqliteStore(":memory:")
    s.create_study(StudySpec("s", "loss", Direction.MAX))
    s.start_run("s", RunSpec("r"))
    s.append_points("s", "r", Points.of(range(len(values)), values))
    got = s.get_points("s", "r").values
    assert np.array_equal(got, np.array(values), equal_nan=True)
    finite = [v for v in values if math.isfinite(v)]
    best = s.get_run("s", "r").best_value
    assert (math.isnan(best) and not finite) or best == max(finite)


def test_best_value_follows_direction(tmp_path):
    s = SqliteStore(tmp_path / "d.db")
    for name, direction in (("min", Direction.MIN), ("max", Direction.MAX)):
        s.create_study(StudySpec(name, "m", direction))
        s.start_run(name, RunSpec("r"))
        s.append_points(name, "r", Points.of([1, 2, 3], [0.5, 0.2, 0.7]))
    assert s.get_run("min", "r").best_value == 0.2
    assert s.get_run("max", "r").best_value == 0.7


def test_batch_is_atomic(store):
    store.append_points("s", "r", Points.of([1, 2, 3], [3.0, 2.0, 1.0]))
    with pytest.raises(InvalidArgumentError, match="already stored"):
        store.append_points("s", "r", Points.of([3, 4], [1.5, 0.5]))
    with pytest.raises(InvalidArgumentError, match="never stored"):
        store.append_points("s", "r", Points.of([0, 4], [1.5, 0.5]))
    run = store.get_run("s", "r")
    assert run.n_points == 3 and run.last_step == 3
    assert store.get_points("s", "r").steps.tolist() == [1, 2, 3]


def test_retry_and_partial_overlap(store):
    first = store.append_points("s", "r", Points.of([1, 2, 3], [3.0, math.nan, 1.0]))
    again = store.append_points("s", "r", Points.of([1, 2, 3], [3.0, math.nan, 1.0]))
    more = store.append_points("s", "r", Points.of([3, 4], [1.0, 0.9]))
    assert (first.n_stored, again.n_stored, more.n_stored) == (3, 0, 1)
    assert more.previous_last_step == 3 and more.new_points.steps.tolist() == [4]
    assert store.get_run("s", "r").n_points == 4


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


def test_migrations_are_recorded_and_reopen_is_a_no_op(tmp_path):
    path = tmp_path / "m.db"
    SqliteStore(path).close()
    s = SqliteStore(path)
    assert s.schema_version() == LATEST_VERSION
    s.close()
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))


def test_a_newer_database_is_refused_untouched(tmp_path):
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreUnavailableError, match="newer"):
        SqliteStore(path)


def test_open_store_urls(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/url.db")
    assert s.list_studies() == []
    s.close()
    assert (tmp_path / "url.db").exists()
    with pytest.raises(InvalidArgumentError, match="sqlite"):
        open_store("mysql://x")
    with pytest.raises(StoreUnavailableError, match="closed"):
        s.list_studies()


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


def test_latest_decision_per_run_survives_reopening(tmp_path):
    from forecaster.store import StoredDecision

    path = tmp_path / "d.db"
    store = SqliteStore(path)
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    for run in ("a", "b"):
        store.start_run("s", RunSpec(run))
    assert store.get_decision("s", "a") is None and store.list_decisions("s") == {}
    first = StoredDecision(
        at_step=10,
        fitted_points=10,
        votes_before=0,
        votes=1,
        action="continue",
        reason="promising",
        explanation="vote 1",
        probabilities={"p": 0.1},
        expected_saved_steps=0,
        policy="f",
        forecast_final=1.5,
    )
    store.save_decision("s", "a", first)
    later = StoredDecision(
        at_step=20,
        fitted_points=11,
        votes_before=1,
        votes=2,
        action="stop",
        reason="unpromising",
        explanation="stop",
        probabilities={"p": 0.01},
        expected_saved_steps=80,
        policy="f",
    )
    store.save_decision("s", "a", later)  # replaces: only the latest is kept
    store.close()
    store = SqliteStore(path)
    assert store.get_decision("s", "a") == later
    assert store.list_decisions("s") == {"a": later}
    with pytest.raises(NotFoundError):
        store.save_decision("s", "nobody", first)
    store.close()
