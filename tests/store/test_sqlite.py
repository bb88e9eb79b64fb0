"""What is SQLite's own in SqliteStore, on a real file: WAL, migrations, URLs, the on-disk
value kinds. What every Store promises is checked in test_contract.py."""

from __future__ import annotations

import math
import sqlite3

import pytest

from forecaster.curves import Direction, Points
from forecaster.errors import (
    InvalidArgumentError,
    StoreUnavailableError,
)
from forecaster.store import RunSpec, StudySpec, open_store, schema
from forecaster.store.schema import LATEST_VERSION, ValueKind
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


def test_nan_and_inf_are_stored_by_kind_with_a_null_real(store):
    store.append_points("s", "r", Points.of([1, 2, 3, 4], [0.5, math.nan, math.inf, -math.inf]))
    conn = sqlite3.connect(store.path)
    rows = conn.execute("SELECT value, value_kind FROM points ORDER BY step").fetchall()
    conn.close()
    assert rows == [
        (0.5, ValueKind.FINITE),
        (None, ValueKind.NAN),
        (None, ValueKind.POS_INF),
        (None, ValueKind.NEG_INF),
    ]


def test_the_folder_is_made_and_an_unusable_path_is_unavailable(tmp_path):
    SqliteStore(tmp_path / "a" / "b" / "runs.db").close()
    assert (tmp_path / "a" / "b" / "runs.db").is_file()
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailableError, match="dir.db"):
        SqliteStore(tmp_path / "dir.db")


def test_memory_databases_work_for_tests():
    s = open_store("sqlite:///:memory:")
    s.create_study(StudySpec("s", "loss", Direction.MIN))
    assert [x.name for x in s.list_studies()] == ["s"]
    s.close()


def test_a_bare_file_path_means_sqlite(tmp_path):
    s = open_store(str(tmp_path / "bare.db"))
    assert isinstance(s, SqliteStore) and s.path == str(tmp_path / "bare.db")
    s.close()
    assert (tmp_path / "bare.db").exists()


def test_a_version_2_database_is_migrated_with_its_summary_rows(tmp_path):
    """A database as the previous release left it: the summary columns are filled from it."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.execute(schema.spell(schema.CREATE_VERSION_TABLE, "sqlite"))
    for version, description, statements in schema.migrations("sqlite")[:2]:
        for sql in statements:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, description))
    conn.execute(
        "INSERT INTO studies VALUES (1, 's', 'loss', 'min', 100, NULL, 'forecast', '{}', '', 0)"
    )
    runs = [  # id, state, max_step, last_step, last_value, last_kind
        (1, "finished", None, 50, 0.7, 0),  # done: its value
        (2, "running", None, 20, 0.5, 0),  # running: its forecast
        (3, "running", 10, 10, 0.2, 0),  # at its own budget: done
        (4, "failed", None, 90, 0.1, 0),  # failed: none
        (5, "stopped", None, 9, None, 1),  # done on a NaN: none
    ]
    for run_id, state, max_step, last_step, value, kind in runs:
        conn.execute(
            "INSERT INTO runs (id, study_id, name, config, max_step, state, created_at, "
            "n_points, last_step, last_value, last_kind) VALUES (?, 1, ?, '{}', ?, ?, 0, 1, ?, "
            "?, ?)",
            (run_id, f"r{run_id}", max_step, state, last_step, value, kind),
        )
    conn.execute(
        "INSERT INTO decisions VALUES (2, 20, 20, 0, 0, 'continue', 'promising', '', '{}', 0, "
        "'forecast', 0.3, 0)"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.schema_version() == LATEST_VERSION
    study = store.get_study("s")
    assert (study.n_runs, study.n_done) == (5, 3)
    assert store.best_standings("s", 5) == [("r3", 0.2), ("r2", 0.3), ("r1", 0.7)]
    store.close()


def test_a_write_batch_that_fails_to_commit_acknowledges_none_of_it(tmp_path):
    """Group commit: the writes queued together succeed or fail together at COMMIT."""
    store = SqliteStore(tmp_path / "g.db")
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    for name in ("a", "b"):
        store.start_run("s", RunSpec(name))
    (tmp_path / "g.db").unlink()  # the next commit cannot be acknowledged
    for name in ("a", "b"):
        with pytest.raises(StoreUnavailableError, match="deleted"):
            store.append_points("s", name, Points.of([1], [1.0]))
    store.close()


def test_the_history_migration_starts_each_run_with_its_saved_decision(tmp_path):
    """A database judged before decision_history existed: each run's history starts with the
    latest decision it had, and later changes append after it."""
    from forecaster.store import StoredDecision, schema

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.execute(schema.spell(schema.CREATE_VERSION_TABLE, "sqlite"))
    for version, description, statements in schema.migrations("sqlite")[:2]:
        for sql in statements:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, description))
    conn.execute(
        "INSERT INTO studies (name, metric, direction, policy, policy_params, forecaster, "
        "created_at) VALUES ('s', 'loss', 'min', 'forecast', '{}', '', 1)"
    )
    conn.execute(
        "INSERT INTO runs (study_id, name, config, state, created_at) "
        "VALUES (1, 'r', '{}', 'running', 1)"
    )
    conn.execute(
        "INSERT INTO decisions VALUES (1, 40, 40, 0, 0, 'continue', 'promising', 'fine', '{}', "
        "0, 'forecast', 2.5, 7.0)"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    history = store.decision_history("s", "r")
    assert [(h.index, h.at_step, h.reason, h.decided_at_s) for h in history] == [
        (0, 40, "promising", 7.0)
    ]
    store.save_decision(
        "s",
        "r",
        StoredDecision(
            at_step=50,
            fitted_points=50,
            votes_before=0,
            votes=1,
            action="stop",
            reason="unpromising",
            explanation="no",
            probabilities={},
            expected_saved_steps=5,
            policy="forecast",
        ),  # fmt: skip
    )
    assert [h.reason for h in store.decision_history("s", "r")] == ["promising", "unpromising"]
    store.close()
