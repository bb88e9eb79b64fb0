"""Tables and versioned migrations: one copy of the SQL, applied in order.

A database records the versions applied in `schema_migrations`. Opening a database applies the
missing ones in one transaction; a database newer than this code is refused, not touched.
To change the schema, append a migration; never edit one that has been released.
"""

from __future__ import annotations

import enum


class ValueKind(enum.IntEnum):
    """How a metric value is stored (points.value_kind, runs.last_kind): SQLite reads a NaN
    REAL back as NULL, so NaN and +/-inf are kept by kind, with a NULL REAL."""

    FINITE = 0
    NAN = 1
    POS_INF = 2
    NEG_INF = 3


MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "studies, runs, points",
        (
            """CREATE TABLE studies (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                metric TEXT NOT NULL,
                direction TEXT NOT NULL,
                max_step INTEGER,
                target REAL,
                policy TEXT NOT NULL,
                policy_params TEXT NOT NULL,
                forecaster TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                study_id INTEGER NOT NULL REFERENCES studies(id),
                name TEXT NOT NULL,
                config TEXT NOT NULL,
                max_step INTEGER,
                lr_schedule TEXT,
                state TEXT NOT NULL,
                created_at REAL NOT NULL,
                finished_at REAL,
                n_points INTEGER NOT NULL DEFAULT 0,
                last_step INTEGER NOT NULL DEFAULT -1,
                last_value REAL,
                last_kind INTEGER,
                best_value REAL,
                UNIQUE (study_id, name)
            )""",
            """CREATE TABLE points (
                run_id INTEGER NOT NULL REFERENCES runs(id),
                step INTEGER NOT NULL,
                value REAL,
                value_kind INTEGER NOT NULL,
                lr REAL,
                wall_time_s REAL,
                PRIMARY KEY (run_id, step)
            )""",
        ),
    ),
    (
        2,
        "the latest decision of each run, with its stop votes and forecast final value",
        (
            """CREATE TABLE decisions (
                run_id INTEGER PRIMARY KEY REFERENCES runs(id),
                at_step INTEGER NOT NULL,
                fitted_points INTEGER NOT NULL,
                votes_before INTEGER NOT NULL,
                votes INTEGER NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                explanation TEXT NOT NULL,
                probabilities TEXT NOT NULL,
                expected_saved_steps INTEGER NOT NULL,
                policy TEXT NOT NULL,
                forecast_final REAL,
                decided_at REAL NOT NULL
            )""",
        ),
    ),
    (
        3,
        "issue 20: every change of a run's decision (its history), and manual stop requests",
        (
            """CREATE TABLE decision_history (
                id INTEGER PRIMARY KEY,
                run_id INTEGER NOT NULL REFERENCES runs(id),
                idx INTEGER NOT NULL,
                at_step INTEGER NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                explanation TEXT NOT NULL,
                probabilities TEXT NOT NULL,
                policy TEXT NOT NULL,
                forecast_final REAL,
                decided_at REAL NOT NULL,
                UNIQUE (run_id, idx)
            )""",
            # The history of a run that was judged before this migration starts with its
            # latest decision: the changes before it were never kept.
            """INSERT INTO decision_history (run_id, idx, at_step, action, reason, explanation,
                probabilities, policy, forecast_final, decided_at)
                SELECT run_id, 0, at_step, action, reason, explanation, probabilities, policy,
                forecast_final, decided_at FROM decisions""",
            """CREATE TABLE stop_requests (
                run_id INTEGER PRIMARY KEY REFERENCES runs(id),
                note TEXT NOT NULL,
                requested_at REAL NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]

CREATE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""
