"""PostgresStore: the store for several service replicas, on one PostgreSQL database.

The SQL, the checks and the summary rows are SqliteStore's (store/sqlite.py); what is
PostgreSQL's own is here: pools of connections in autocommit (psycopg-pool; one for writes,
one for reads), a transaction per call, row locks instead of SQLite's one writer (the run a
write changes is read FOR UPDATE, so two replicas appending to the same run take turns, and
the second sees the first's points: an identical retry stores nothing, a conflicting one is
refused), and migrations under an advisory lock, so replicas starting together migrate once.
The calls of a report (its append, its decision, GetDecision's read of the run, a new run's
reads) are one statement each, one round trip (docs/benchmarks.md, "Service at scale on
PostgreSQL"). PostgreSQL commits concurrent transactions with one WAL flush by itself (group
commit), so writes are not queued here. Durability: a method returns after COMMIT, with
synchronous_commit as the server has it (on by default).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from forecaster.curves import Direction, LrSchedule, Points
from forecaster.errors import StoreUnavailableError
from forecaster.store import schema
from forecaster.store.base import AppendResult, Run, RunSpec, RunState, StoredDecision
from forecaster.store.schema import Dialect
from forecaster.store.sqlite import (
    CHUNK_POINTS,
    Cursor,
    SqliteStore,
    _nan_if_none,
    _none_if_nan,
    encode_value,
    points_of_chunks,
    points_of_columns,
)

T = TypeVar("T")
log = logging.getLogger("forecaster.store")

# Any 64-bit number, the same in every replica: the key of the advisory lock of migrations.
_MIGRATION_LOCK = 0x666F72656361  # "foreca"
# How long what an append read stands for the reads of this thread that follow (the engine
# asks at once; a call that failed between leaves nothing older than this).
_FRESH_FOR_S = 0.5
# libpq 14 and later pipeline statements (psycopg[binary] brings one).
_PIPELINES = psycopg.Pipeline.is_supported()
# A write that met a deadlock or a serialization failure is tried again this many times.
_RETRIES = 3


class _QmarkCursor:
    """A psycopg cursor that takes SQLite's "?" placeholders (our SQL has no other "?" or
    "%"), so that both stores run the same statements.

    In pipeline mode (pipeline given) a statement is sent without waiting for its answer:
    a fetch waits for the answers so far, so the statements a transaction only sends go to
    the server with the next fetch or the COMMIT, in one round trip."""

    _spelled: dict[str, str] = {}

    def __init__(
        self, cursor: psycopg.Cursor[Any], pipeline: psycopg.Pipeline | None = None
    ) -> None:
        self.raw = cursor
        self._pipeline = pipeline

    @classmethod
    def _spell(cls, sql: str) -> str:
        spelled = cls._spelled.get(sql)
        if spelled is None:
            spelled = cls._spelled[sql] = sql.replace("?", "%s")
        return spelled

    def execute(self, sql: str, params: Any = ()) -> _QmarkCursor:
        self.raw.execute(self._spell(sql), params or None)
        return self

    def executemany(self, sql: str, rows: Any) -> _QmarkCursor:
        self.raw.executemany(self._spell(sql), rows)
        return self

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return self.raw.fetchall()

    @property
    def rowcount(self) -> int:
        if self._pipeline is not None:
            self._pipeline.sync()  # the count comes with the answer
        return self.raw.rowcount


def _pipeline(conn: psycopg.Connection[Any]) -> AbstractContextManager[psycopg.Pipeline | None]:
    """Pipeline mode on conn when this libpq has it (14 and later; psycopg[binary] brings
    one), else nothing: each statement then waits for its answer."""
    return conn.pipeline() if _PIPELINES else nullcontext(None)


def _display(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresStore(SqliteStore):
    """Studies, runs and points in a PostgreSQL database, shared by any number of replicas.

    Args:
        url: a libpq URL, postgresql://user:password@host:port/database[?options].
        pool_size: connections kept open for writes (the most writes at once on this
            replica), and as many for reads.
        connect_timeout_s: how long opening waits for the server before it gives up.

    Example:
        >>> store = PostgresStore("postgresql://forecaster@db:5432/forecaster")
    """

    shared_by_replicas: ClassVar[bool] = True

    dialect: Dialect = "postgresql"
    _FOR_UPDATE = " FOR UPDATE OF r"

    def __init__(  # noqa: D107 - SqliteStore's file handling does not apply
        self,
        url: str,
        *,
        pool_size: int = 8,
        connect_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = _display(url)
        self._clock = clock
        self._closed = False
        self._identity = None
        self._lock = threading.Lock()
        self._fresh = _Handoff()
        # (study, run) -> (version of its row, its spec decoded): get_run's cache.
        self._specs: dict[tuple[str, str], tuple[str, RunSpec]] = {}
        # Every connection opened at start (a report never waits for one to connect) and in
        # autocommit: a read of one statement is one round trip, without BEGIN and COMMIT;
        # writes and reads of several statements open their own transactions. Reads have
        # connections of their own: a GetDecision never waits for one that a report holds
        # while its COMMIT waits on the disk.
        size = max(pool_size, 2)  # migrating holds two
        self._pool, self._read_pool = (
            ConnectionPool(
                url,
                min_size=size,
                max_size=size,
                kwargs={"row_factory": dict_row, "autocommit": True},
                open=False,
                name=f"forecaster-{role}",
            )
            for role in ("writes", "reads")
        )
        try:
            for pool in (self._pool, self._read_pool):
                pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as e:
            self._pool.close()
            self._read_pool.close()
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL database {self.path} within "
                f"{connect_timeout_s:g} s. Check that the server runs, the URL (host, port, "
                "user, database) and the password."
            ) from e
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    def _wrap_error(self, e: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"PostgreSQL error on {self.path}: {e}")

    def check(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed.")

    def _write(self, op: Callable[[Cursor], T]) -> T:
        for attempt in range(_RETRIES + 1):
            try:
                with self._transaction() as cur:
                    return op(cur)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == _RETRIES:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A write transaction in pipeline mode: BEGIN goes with the first statement, and
        what is only sent (inserts, updates) goes with the COMMIT, whose answer is awaited:
        the call returns after the COMMIT succeeded, or raises."""
        self.check()
        self._fresh.clear()
        try:
            with (
                self._pool.connection() as conn,
                _pipeline(conn) as pipeline,
                conn.transaction(),
                conn.cursor() as raw,
            ):
                yield _QmarkCursor(raw, pipeline)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise
        except (psycopg.Error, PoolTimeout) as e:
            raise self._wrap_error(e) from e

    @contextmanager
    def _read(self, snapshot: bool = True) -> Iterator[Cursor]:
        """One statement: on its own, one round trip (autocommit). Several (snapshot): in a
        REPEATABLE READ READ ONLY transaction, so that they read one snapshot (READ COMMITTED
        would give each statement its own), pipelined like a write."""
        self.check()
        try:
            with self._read_pool.connection() as conn:
                if not snapshot:
                    with conn.cursor() as raw:
                        yield _QmarkCursor(raw)
                    return
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                try:
                    with _pipeline(conn) as pipeline, conn.transaction(), conn.cursor() as raw:
                        yield _QmarkCursor(raw, pipeline)
                finally:
                    conn.isolation_level = None
                    conn.read_only = None
        except (psycopg.Error, PoolTimeout) as e:
            raise self._wrap_error(e) from e

    def _migrate(self) -> None:
        with self._transaction() as cur:
            # Held until this transaction ends, while SqliteStore's migration runs on another
            # connection of the pool: replicas starting together migrate once, in turn.
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,)).fetchone()
            super()._migrate()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
                self._read_pool.close()

    @staticmethod
    def _point_rows(cur: Cursor, run_id: int, after_step: int = -1) -> list[tuple[Any, ...]]:
        raw: psycopg.Cursor[Any] = cur.raw
        with raw.connection.cursor(row_factory=tuple_row) as tuples:
            tuples.execute(
                "SELECT step, value, value_kind, lr, wall_time_s FROM points WHERE run_id = %s "
                "AND step > %s ORDER BY step",
                (run_id, after_step),
                binary=True,
            )
            return tuples.fetchall()

    # -- the hot paths, in one round trip each -----------------------------------------------
    #
    # A report appends (then the engine asks for the incumbent) and often saves a decision;
    # SqliteStore's statements, each awaited, cost PostgreSQL a round trip apiece (the
    # server's CPU and this process's, as much as the wait). Here each is one statement, its
    # own transaction: data-modifying CTEs, guarded so that a case they do not cover writes
    # nothing and takes SqliteStore's way (docs/benchmarks.md, the PostgreSQL pass).

    def _pooled_write(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """work(conn) on a pooled connection, tried again on a deadlock or a serialization
        failure; work's statement is its own transaction (autocommit)."""
        self.check()
        for attempt in range(_RETRIES + 1):
            try:
                with self._pool.connection() as conn:
                    return work(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
                if attempt == _RETRIES:
                    raise self._wrap_error(e) from e
            except (psycopg.Error, PoolTimeout) as e:
                raise self._wrap_error(e) from e
        raise AssertionError("unreachable")

    def _study_key_on(self, conn: psycopg.Connection[Any], study: str) -> tuple[int, str]:
        """_study_key on conn (a read of the study's row the first time only)."""
        with conn.cursor() as raw:
            return self._study_key(_QmarkCursor(raw, None), study)

    def append_points(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> AppendResult:
        """The common report (a running run, every point after its last step, no schedule)
        in one statement, its own transaction: the run's row locked and read, the points
        inserted from arrays, its summary row and standing updated, and the study's two best
        standings read (for the incumbent the engine asks for next). The writes are guarded
        by the run being running and the batch coming after its last step, so that when the
        row says otherwise they did nothing; the call then takes SqliteStore's way (retries,
        conflicts, errors, schedules) in a transaction of its own. The statement returns
        after its COMMIT."""
        self._fresh.clear()
        if lr_schedule is None and len(points):
            fast = self._pooled_write(lambda conn: self._append_new(conn, study, run, points))
            if fast is not None:
                if fast.result.run.n_points - fast.packed_before >= CHUNK_POINTS:
                    try:
                        self._write(lambda cur: self._pack_now(cur, study, run))
                    except StoreUnavailableError as e:  # the points are stored: acknowledge
                        log.warning("packing points failed; the next append packs them: %s", e)
                return fast.result
        return super().append_points(study, run, points, lr_schedule)

    def _append_new(
        self, conn: psycopg.Connection[Any], study: str, run: str, points: Points
    ) -> _Appended | None:
        study_id, direction = self._study_key_on(conn, study)
        first, last = int(points.steps[0]), int(points.steps[-1])
        values, kinds = zip(*(encode_value(float(v)) for v in points.values), strict=True)
        finite = points.values[np.isfinite(points.values)]
        batch_best: float | None = None
        if len(finite):
            batch_best = float(finite.min() if direction == Direction.MIN.value else finite.max())
        with conn.cursor() as cur:
            cur.execute(
                self._append_sql(direction),
                {
                    "study_id": study_id,
                    "run": run,
                    "first": first,
                    "last": last,
                    "n": len(points),
                    "value": values[-1],
                    "kind": int(kinds[-1]),
                    "best": batch_best,
                    "steps": points.steps.tolist(),
                    "values": list(values),
                    "kinds": [int(k) for k in kinds],
                    "lr": [_none_if_nan(x) for x in points.lr.tolist()],
                    "wall_time_s": [_none_if_nan(x) for x in points.wall_time_s.tolist()],
                },
            )
            row = cur.fetchone()
        if row is None or RunState(row["state"]) is not RunState.RUNNING:
            return None  # nothing was written: SqliteStore's way says what is wrong
        if int(row["last_step"]) >= first:
            return None  # a retry or a conflict: nothing was written either
        fresh: dict[tuple[str, ...], Any] = {
            ("standings", study): list(
                zip(row["best_names"] or [], row["best_standings"] or [], strict=True)
            ),
            ("decision", study, run): row,
        }
        if int(row["n_points"]) == 0:
            fresh["points", study, run] = points  # the run's first points: all it has
        self._fresh.give(fresh)
        old_best = _nan_if_none(row["best_value"])
        best_value = old_best
        if batch_best is not None and (
            math.isnan(old_best) or Direction(direction).better(batch_best, old_best)
        ):
            best_value = batch_best
        updated = replace(
            self._run(row),
            n_points=int(row["n_points"]) + len(points),
            last_step=last,
            last_value=float(points.values[-1]),
            best_value=best_value,
        )
        result = AppendResult(updated, len(points), int(row["last_step"]), points)
        return _Appended(result, int(row["packed_points"]))

    @classmethod
    def _append_sql(cls, direction: str) -> str:
        """One statement, its own transaction (autocommit): lock and read the run's row; when
        it is running and the batch comes after its last step, insert the points (from
        arrays) and update its summary row and standing; read the study's two best standings
        with the run's new one among them (the other runs' as the statement found them)."""
        sql = cls._append_sql_of.get(direction)
        if sql is not None:
            return sql
        better, order = ("<", "ASC") if direction == Direction.MIN.value else (">", "DESC")
        standing = schema.standing_after_append(
            "%(last)s::int8", "%(value)s::float8", "%(kind)s::int8"
        )
        sql = f"""WITH r AS (
            SELECT {cls._RUN_COLS}, {cls._DECISION_COLS} {cls._RUN_FROM}
            LEFT JOIN decisions d ON d.run_id = r.id
            WHERE r.study_id = %(study_id)s AND r.name = %(run)s FOR UPDATE OF r
        ), ok AS (
            SELECT run_id FROM r WHERE state = 'running' AND last_step < %(first)s::int8
        ), ins AS (
            INSERT INTO points (run_id, step, value, value_kind, lr, wall_time_s)
            SELECT ok.run_id, p.step, p.value, p.kind, p.lr, p.wall_time_s FROM ok,
                unnest(%(steps)b::int8[], %(values)b::float8[], %(kinds)b::int8[],
                       %(lr)b::float8[], %(wall_time_s)b::float8[])
                AS p(step, value, kind, lr, wall_time_s)
        ), upd AS (
            UPDATE runs SET n_points = runs.n_points + %(n)s::int8,
                last_step = %(last)s::int8, last_value = %(value)s::float8,
                last_kind = %(kind)s::int8,
                best_value = CASE WHEN %(best)s::float8 IS NULL THEN runs.best_value
                    WHEN runs.best_value IS NULL OR %(best)s::float8 {better} runs.best_value
                    THEN %(best)s::float8 ELSE runs.best_value END,
                standing = {standing}
            FROM ok WHERE runs.id = ok.run_id RETURNING runs.id, runs.standing
        ), best AS (
            (SELECT name, standing, id FROM runs WHERE study_id = %(study_id)s
                AND standing IS NOT NULL AND name <> %(run)s ORDER BY standing {order}, id
                LIMIT 2)
            UNION ALL
            (SELECT %(run)s, standing, id FROM upd WHERE standing IS NOT NULL)
        )
        SELECT r.*,
            (SELECT array_agg(name ORDER BY standing {order}, id) FROM best) AS best_names,
            (SELECT array_agg(standing ORDER BY standing {order}, id) FROM best)
                AS best_standings
        FROM r"""
        cls._append_sql_of[direction] = sql
        return sql

    _append_sql_of: dict[str, str] = {}

    def _pack_now(self, cur: Cursor, study: str, run: str) -> None:
        """Packs the run's points into a chunk when enough are unpacked (after a fast append,
        in a transaction of its own: the chunks are a read-side copy of the points)."""
        row = self._run_row(cur, study, run, lock=True)
        self._pack(cur, row["run_id"], int(row["n_points"]), row)

    @staticmethod
    def _standings_sql(study_id: int, direction: str, n: int) -> tuple[str, tuple[Any, ...]]:
        order = "DESC" if direction == Direction.MAX.value else "ASC"
        return (
            "SELECT name, standing FROM runs WHERE study_id = %s AND standing IS NOT NULL "
            f"ORDER BY standing {order}, id LIMIT %s",
            (study_id, n),
        )

    def best_standings(self, study: str, n: int = 2) -> list[tuple[str, float]]:
        """The standings this thread's append just read (the engine's incumbent for the
        report's decision), else read."""
        found, standings = self._fresh.take(("standings", study))
        if found and n <= 2:
            return list(standings[:n])
        return super().best_standings(study, n)

    def save_decision(self, study: str, run: str, decision: StoredDecision) -> None:
        """In one statement, its own transaction: the run's row locked, the decision appended
        to its history when its action or reason differs from the last one there (or it is
        the first), the latest decision replaced, the run's standing updated. The statement
        reads the history as it found it when it began: when another replica appended to
        it meanwhile (it waited for that one's lock), the index is taken, and it runs again."""
        self._fresh.clear()
        final = decision.forecast_final
        final = None if final is None or not math.isfinite(final) else float(final)
        probabilities = json.dumps(decision.probabilities, sort_keys=True)
        now = self._clock()

        def work(conn: psycopg.Connection[Any]) -> bool:
            study_id, _ = self._study_key_on(conn, study)
            args = {
                "study_id": study_id, "run": run, "at_step": decision.at_step,
                "fitted_points": decision.fitted_points, "votes_before": decision.votes_before,
                "votes": decision.votes, "action": decision.action, "reason": decision.reason,
                "explanation": decision.explanation, "probabilities": probabilities,
                "expected_saved_steps": decision.expected_saved_steps,
                "policy": decision.policy, "final": final, "now": now,
            }  # fmt: skip
            with conn.cursor() as cur:
                for attempt in range(_RETRIES + 1):
                    try:
                        return cur.execute(self._SAVE_DECISION_SQL, args).fetchone() is not None
                    except psycopg.errors.UniqueViolation:
                        if attempt == _RETRIES:
                            raise
            raise AssertionError("unreachable")

        if not self._pooled_write(work):
            with self._read(snapshot=False) as cur:
                self._run_row(cur, study, run)  # NotFoundError, named
            raise AssertionError("unreachable: the run was found after all")

    _SAVE_DECISION_SQL = f"""WITH r AS (
            SELECT id FROM runs WHERE study_id = %(study_id)s AND name = %(run)s FOR UPDATE
        ), last AS (
            SELECT idx, action, reason FROM decision_history
            WHERE run_id = (SELECT id FROM r) ORDER BY idx DESC LIMIT 1
        ), history AS (
            INSERT INTO decision_history (run_id, idx, at_step, action, reason, explanation,
                probabilities, policy, forecast_final, decided_at)
            SELECT r.id, COALESCE((SELECT idx FROM last) + 1, 0), %(at_step)s, %(action)s,
                %(reason)s, %(explanation)s, %(probabilities)s, %(policy)s,
                %(final)s::float8, %(now)s::float8
            FROM r WHERE NOT EXISTS (
                SELECT 1 FROM last WHERE action = %(action)s AND reason = %(reason)s)
        ), latest AS (
            INSERT INTO decisions (run_id, at_step, fitted_points, votes_before, votes, action,
                reason, explanation, probabilities, expected_saved_steps, policy,
                forecast_final, decided_at)
            SELECT r.id, %(at_step)s, %(fitted_points)s, %(votes_before)s, %(votes)s,
                %(action)s, %(reason)s, %(explanation)s, %(probabilities)s,
                %(expected_saved_steps)s, %(policy)s, %(final)s::float8, %(now)s::float8
            FROM r ON CONFLICT (run_id) DO UPDATE SET at_step = excluded.at_step,
                fitted_points = excluded.fitted_points, votes_before = excluded.votes_before,
                votes = excluded.votes, action = excluded.action, reason = excluded.reason,
                explanation = excluded.explanation, probabilities = excluded.probabilities,
                expected_saved_steps = excluded.expected_saved_steps, policy = excluded.policy,
                forecast_final = excluded.forecast_final, decided_at = excluded.decided_at
        ), standing AS (
            UPDATE runs SET standing = {schema.standing_with_decision("%(final)s::float8")}
            FROM r WHERE runs.id = r.id
        )
        SELECT id FROM r"""

    def get_run(self, study: str, run: str) -> Run:
        """One statement. A run's spec (its config may be large) is decoded once per version
        of its row: the statement compares the row's version (xmin, the transaction that
        wrote it) with the one this replica decoded, and sends config and schedule only when
        they differ; every other column, always. Another replica's write is a new version."""
        return self._run_read(study, run, 0)[0]

    def run_and_standings(
        self, study: str, run: str, n: int = 2
    ) -> tuple[Run, list[tuple[str, float]]]:
        """get_run's statement with the study's n best standings read in it (one round trip,
        one snapshot): a GetDecision's whole check of its cached decision."""
        return self._run_read(study, run, n)

    def _run_read(self, study: str, run: str, n: int) -> tuple[Run, list[tuple[str, float]]]:
        key = (study, run)
        seen = self._specs.get(key)
        with self._read(snapshot=False) as cur:
            study_id, direction = self._study_key(cur, study)
            row = cur.execute(
                self._get_run_sql(direction if n else ""),
                (seen[0] if seen else "", *((n,) if n else ()), study_id, run),
            ).fetchone()
            if row is None:
                self._run_row(cur, study, run)  # NotFoundError, named
        standings = (
            list(zip(row["best_names"] or [], row["best_standings"] or [], strict=True))
            if n
            else []
        )
        if row["config"] is None and seen is not None:
            return self._run(row, seen[1]), standings
        found = self._run(row)
        if len(self._specs) >= 100_000:  # bounded however many runs come and go
            self._specs.clear()
        self._specs[key] = (row["version"], found.spec)
        return found, standings

    @staticmethod
    @functools.cache
    def _get_run_sql(direction: str) -> str:
        """The run's row (config and schedule only when their version is not the one given);
        with a direction, also the study's best standings in that direction (as many as the
        second parameter says), best first, as two arrays. Built once per direction."""
        best, join = "", ""
        if direction:
            order = "DESC" if direction == Direction.MAX.value else "ASC"
            best = ", b.best_names, b.best_standings"
            join = (
                " CROSS JOIN LATERAL (SELECT array_agg(t.name ORDER BY t.standing "
                f"{order}, t.id) AS best_names, array_agg(t.standing ORDER BY t.standing "
                f"{order}, t.id) AS best_standings FROM (SELECT name, standing, id FROM runs "
                "WHERE study_id = v.study_id AND standing IS NOT NULL ORDER BY standing "
                f"{order}, id LIMIT v.n) t) b"
            )
        sql = (
            "WITH v AS (SELECT %s::text AS seen, "
            + ("%s::int8 AS n, " if direction else "")
            + "%s::int8 AS study_id) SELECT "
            + SqliteStore._RUN_COLS.replace(
                "r.config, ",
                "CASE WHEN r.xmin::text = v.seen THEN NULL ELSE r.config END AS config, ",
            ).replace(
                "r.lr_schedule, ",
                "CASE WHEN r.xmin::text = v.seen THEN NULL ELSE r.lr_schedule END AS lr_schedule, ",
            )
            + ", r.xmin::text AS version"
            + best
            + " "
            + SqliteStore._RUN_FROM
            + " CROSS JOIN v"
            + join
            + " WHERE r.study_id = v.study_id AND r.name = %s"
        )
        return sql

    def get_decision(self, study: str, run: str) -> StoredDecision | None:
        """The decision this thread's append just read with the run's row, else one
        statement (the run and its decision joined)."""
        found, row = self._fresh.take(("decision", study, run))
        if found:
            return None if row["at_step"] is None else self._decision(row)
        with self._read(snapshot=False) as cur:
            study_id, _ = self._study_key(cur, study)
            row = cur.execute(
                f"SELECT r.id AS run_id, {self._DECISION_COLS} FROM runs r "
                "LEFT JOIN decisions d ON d.run_id = r.id WHERE r.study_id = ? AND r.name = ?",
                (study_id, run),
            ).fetchone()
            if row is None:
                self._run_row(cur, study, run)  # NotFoundError, named
        return None if row["at_step"] is None else self._decision(row)

    def _all_points(self, study: str, run: str) -> Points:
        """The points of a run's first append on this thread, just written (all the run
        has), else one statement (one snapshot): the run's chunks and the points after them,
        each column as one array."""
        found, points = self._fresh.take(("points", study, run))
        if found:
            return points
        with self._read(snapshot=False) as cur:
            study_id, _ = self._study_key(cur, study)
            raw: psycopg.Cursor[Any] = cur.raw
            raw.execute(self._ALL_POINTS_SQL, (study_id, run), binary=True)
            row = raw.fetchone()
            if row is None:
                self._run_row(cur, study, run)  # NotFoundError, named
        assert row is not None
        tail = (
            Points.of([], [])
            if row["step"] is None
            else points_of_columns(
                row["step"], row["value"], row["value_kind"], row["lr"], row["wall_time_s"]
            )
        )
        if row["chunk_steps"] is None:
            return tail
        columns = ("chunk_steps", "chunk_vals", "chunk_lr", "chunk_wall_time_s")
        return points_of_chunks([row[name] for name in columns], tail)

    _ALL_POINTS_SQL = """SELECT
            (SELECT array_agg(c.steps ORDER BY c.first_step) FROM point_chunks c
                WHERE c.run_id = r.id) AS chunk_steps,
            (SELECT array_agg(c.vals ORDER BY c.first_step) FROM point_chunks c
                WHERE c.run_id = r.id) AS chunk_vals,
            (SELECT array_agg(c.lr ORDER BY c.first_step) FROM point_chunks c
                WHERE c.run_id = r.id) AS chunk_lr,
            (SELECT array_agg(c.wall_time_s ORDER BY c.first_step) FROM point_chunks c
                WHERE c.run_id = r.id) AS chunk_wall_time_s,
            t.*
        FROM runs r, LATERAL (
            SELECT array_agg(p.step ORDER BY p.step) AS step,
                array_agg(p.value ORDER BY p.step) AS value,
                array_agg(p.value_kind ORDER BY p.step) AS value_kind,
                array_agg(p.lr ORDER BY p.step) AS lr,
                array_agg(p.wall_time_s ORDER BY p.step) AS wall_time_s
            FROM points p WHERE p.run_id = r.id AND p.step > r.packed_last_step
        ) t
        WHERE r.study_id = %s AND r.name = %s"""


class _Handoff:
    """What a report's append read in its own statement (the run's decision, the study's
    best standings, a new run's points), handed to the reads of the same things that the
    engine makes next on the same thread: each taken once, within _FRESH_FOR_S, and all
    dropped by the next write of the thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def give(self, items: dict[tuple[str, ...], Any]) -> None:
        self._local.items = (items, time.monotonic() + _FRESH_FOR_S)

    def take(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        held = getattr(self._local, "items", None)
        if held is None or key not in held[0] or time.monotonic() >= held[1]:
            return False, None
        return True, held[0].pop(key)

    def clear(self) -> None:
        self._local.items = None


@dataclass(frozen=True)
class _Appended:
    """A fast append's result, and how many of the run's points were packed before it."""

    result: AppendResult
    packed_before: int
