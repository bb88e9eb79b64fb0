"""Tables and versioned migrations: one copy of the SQL, applied in order.

A database records the versions applied in `schema_migrations`. Opening a database applies the
missing ones in one transaction; a database newer than this code is refused, not touched.
To change the schema, append a migration; never edit one that has been released.

One text serves SQLite and PostgreSQL: the few words that differ are written as {ID}, {INT},
{REAL} and {BLOB} and `statements(dialect)` spells them (for SQLite exactly as they were released).
PostgreSQL needs 64-bit integers and doubles said out loud: its INTEGER is 32-bit and its
REAL is a 4-byte float.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]


class ValueKind(enum.IntEnum):
    """How a metric value is stored (points.value_kind, runs.last_kind): SQLite reads a NaN
    REAL back as NULL, so NaN and +/-inf are kept by kind, with a NULL REAL."""

    FINITE = 0
    NAN = 1
    POS_INF = 2
    NEG_INF = 3


# A run's standing, the value it offers the incumbent (judging.standing_of, in SQL so that a
# write keeps it in the same transaction): none when it failed; its last value once it is done
# (finished, stopped, or at its budget) and that value is finite; else the forecast final value
# of its latest decision (stored only when finite).
STANDING = """CASE
    WHEN state = 'failed' THEN NULL
    WHEN state <> 'running' OR last_step >= COALESCE(
        max_step, (SELECT s.max_step FROM studies s WHERE s.id = runs.study_id), last_step + 1)
    THEN CASE WHEN last_kind = 0 THEN last_value END
    ELSE (SELECT d.forecast_final FROM decisions d WHERE d.run_id = runs.id)
END"""


_LATEST_FORECAST = "(SELECT d.forecast_final FROM decisions d WHERE d.run_id = runs.id)"


def standing_with_decision(forecast_final: str) -> str:
    """STANDING with the latest decision's forecast final value given as an SQL expression
    (a decision being saved, in the statement that saves it)."""
    assert _LATEST_FORECAST in STANDING
    return STANDING.replace(_LATEST_FORECAST, forecast_final)


def standing_after_append(last_step: str, last_value: str, last_kind: str) -> str:
    """STANDING as an UPDATE of a running run's row that appends points sets it, with the
    new last step, value and kind given as SQL expressions (the SET sees the row before).
    A run that is not at its budget after the append was not at it before either, so its
    standing is still its latest decision's forecast: the value the row holds, which an
    append leaves as it is (and a concurrent decision may just have written)."""
    sql = standing_with_decision("runs.standing")
    for column, expression in (
        ("state", "'running'"),
        ("last_step", last_step),
        ("last_value", last_value),
        ("last_kind", last_kind),
    ):
        sql = re.sub(rf"(?<![.\w]){column}\b", expression.replace("\\", r"\\"), sql)
    return sql


MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "studies, runs, points",
        (
            """CREATE TABLE studies (
                id {ID},
                name TEXT NOT NULL UNIQUE,
                metric TEXT NOT NULL,
                direction TEXT NOT NULL,
                max_step {INT},
                target {REAL},
                policy TEXT NOT NULL,
                policy_params TEXT NOT NULL,
                forecaster TEXT NOT NULL,
                created_at {REAL} NOT NULL
            )""",
            """CREATE TABLE runs (
                id {ID},
                study_id {INT} NOT NULL REFERENCES studies(id),
                name TEXT NOT NULL,
                config TEXT NOT NULL,
                max_step {INT},
                lr_schedule TEXT,
                state TEXT NOT NULL,
                created_at {REAL} NOT NULL,
                finished_at {REAL},
                n_points {INT} NOT NULL DEFAULT 0,
                last_step {INT} NOT NULL DEFAULT -1,
                last_value {REAL},
                last_kind {INT},
                best_value {REAL},
                UNIQUE (study_id, name)
            )""",
            """CREATE TABLE points (
                run_id {INT} NOT NULL REFERENCES runs(id),
                step {INT} NOT NULL,
                value {REAL},
                value_kind {INT} NOT NULL,
                lr {REAL},
                wall_time_s {REAL},
                PRIMARY KEY (run_id, step)
            )""",
        ),
    ),
    (
        2,
        "the latest decision of each run, with its stop votes and forecast final value",
        (
            """CREATE TABLE decisions (
                run_id {INT} PRIMARY KEY REFERENCES runs(id),
                at_step {INT} NOT NULL,
                fitted_points {INT} NOT NULL,
                votes_before {INT} NOT NULL,
                votes {INT} NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                explanation TEXT NOT NULL,
                probabilities TEXT NOT NULL,
                expected_saved_steps {INT} NOT NULL,
                policy TEXT NOT NULL,
                forecast_final {REAL},
                decided_at {REAL} NOT NULL
            )""",
        ),
    ),
    (
        3,
        "summary rows: each study's run counts, each run's standing (its value for the incumbent)",
        (
            "ALTER TABLE studies ADD COLUMN n_runs {INT} NOT NULL DEFAULT 0",
            "ALTER TABLE studies ADD COLUMN n_done {INT} NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN standing {REAL}",
            """UPDATE studies SET
                n_runs = (SELECT COUNT(*) FROM runs r WHERE r.study_id = studies.id),
                n_done = (SELECT COUNT(*) FROM runs r
                          WHERE r.study_id = studies.id AND r.state <> 'running')""",
            # The standing of the runs stored before this version; the stores keep it since.
            "UPDATE runs SET standing = " + STANDING,
            # The incumbent is one step down this index, whatever the study's size.
            "CREATE INDEX runs_by_standing ON runs (study_id, standing)",
            "CREATE INDEX runs_by_study ON runs (study_id, id)",
        ),
    ),
    (
        4,
        "point chunks: a run's points packed in arrays as they accumulate, read in one go",
        (
            # A read-side copy of the points table, written in the same transaction: each
            # chunk holds consecutive points (steps int64, values/lr/wall_time_s float64, NaN
            # and inf as they are, little-endian), the points after packed_last_step are rows.
            """CREATE TABLE point_chunks (
                run_id {INT} NOT NULL REFERENCES runs(id),
                first_step {INT} NOT NULL,
                last_step {INT} NOT NULL,
                n {INT} NOT NULL,
                steps {BLOB} NOT NULL,
                vals {BLOB} NOT NULL,
                lr {BLOB} NOT NULL,
                wall_time_s {BLOB} NOT NULL,
                PRIMARY KEY (run_id, first_step)
            )""",
            "ALTER TABLE runs ADD COLUMN packed_points {INT} NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN packed_last_step {INT} NOT NULL DEFAULT -1",
        ),
    ),
    (
        5,
        "issue 20: every change of a run's decision (its history), and manual stop requests",
        (
            """CREATE TABLE decision_history (
                id {ID},
                run_id {INT} NOT NULL REFERENCES runs(id),
                idx {INT} NOT NULL,
                at_step {INT} NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                explanation TEXT NOT NULL,
                probabilities TEXT NOT NULL,
                policy TEXT NOT NULL,
                forecast_final {REAL},
                decided_at {REAL} NOT NULL,
                UNIQUE (run_id, idx)
            )""",
            # The history of a run that was judged before this migration starts with its
            # latest decision: the changes before it were never kept.
            """INSERT INTO decision_history (run_id, idx, at_step, action, reason, explanation,
                probabilities, policy, forecast_final, decided_at)
                SELECT run_id, 0, at_step, action, reason, explanation, probabilities, policy,
                forecast_final, decided_at FROM decisions""",
            """CREATE TABLE stop_requests (
                run_id {INT} PRIMARY KEY REFERENCES runs(id),
                note TEXT NOT NULL,
                requested_at {REAL} NOT NULL
            )""",
        ),
    ),
    (
        6,
        "issue 16: a study's metric kind and explicit bounds (empty kind / NULL: inferred)",
        (
            "ALTER TABLE studies ADD COLUMN metric_kind TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE studies ADD COLUMN metric_lower {REAL}",
            "ALTER TABLE studies ADD COLUMN metric_upper {REAL}",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]

CREATE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version {INT} PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at {REAL} NOT NULL
)"""

_WORDS: dict[str, dict[str, str]] = {
    "sqlite": {"ID": "INTEGER PRIMARY KEY", "INT": "INTEGER", "REAL": "REAL", "BLOB": "BLOB"},
    "postgresql": {
        "ID": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "INT": "BIGINT",
        "REAL": "DOUBLE PRECISION",
        "BLOB": "BYTEA",
    },
}


def spell(sql: str, dialect: Dialect) -> str:
    """One statement of this module in a dialect's words."""
    return sql.format(**_WORDS[dialect])


def migrations(dialect: Dialect) -> list[tuple[int, str, list[str]]]:
    """(version, description, statements) in order, spelled for the dialect."""
    return [(v, d, [spell(sql, dialect) for sql in stmts]) for v, d, stmts in MIGRATIONS]
