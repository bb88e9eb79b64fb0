"""SqliteStore: the embedded default store, one SQLite file in WAL mode.

Durability: journal_mode=WAL with synchronous=FULL, and a method that writes returns only
after the COMMIT that holds its write, so an acknowledged point survives a crash (SIGKILL,
power loss) of the service. Group commit: writes that arrive while one transaction commits
wait for it, then go together into the next (each in its own SAVEPOINT, so one refused write
leaves the others), one fsync for all of them. Reads use a connection per thread (WAL lets
them read while a write commits). NaN and +/-inf round-trip exactly through a value kind
column, because SQLite reads a stored NaN back as NULL.

The file is watched: a write is refused, and check() fails, once the file at the path is no
longer the one opened (deleted or replaced), instead of writing into an unlinked inode. With
exclusive=True (the service) a lock file beside the database refuses a second service on it,
and a corrupt database is refused when it opens.

The SQL here is plain enough for PostgreSQL too: store/postgres.py reuses it, with its own
connections, transactions and locking.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar
from urllib.parse import quote

import numpy as np

from forecaster.curves import Direction, LrSchedule, Points
from forecaster.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    ForecasterError,
    InvalidArgumentError,
    NotFoundError,
    StoreUnavailableError,
)
from forecaster.store import schema
from forecaster.store.base import (
    AppendResult,
    DecisionChange,
    Run,
    RunSpec,
    RunState,
    StopRequest,
    StoredDecision,
    Study,
    StudySpec,
    canonical_json,
    shown,
)
from forecaster.store.schema import Dialect, ValueKind

T = TypeVar("T")
# LIMIT for "no limit": SQLite's -1 means none, PostgreSQL's does not.
_MANY = 2**62
# Points per chunk of store.schema's point_chunks: a 10^6-point run is read as ~250 arrays.
CHUNK_POINTS = 4096
# How often the store's thread copies the WAL back into the database file.
CHECKPOINT_EVERY_S = 0.5
Cursor = Any  # sqlite3.Cursor here, a psycopg cursor in postgres.py: rows read by column name


def encode_value(v: float) -> tuple[float | None, ValueKind]:
    """(stored REAL, kind): NaN and +/-inf are kept by kind, the REAL is NULL for them."""
    if math.isnan(v):
        return None, ValueKind.NAN
    if math.isinf(v):
        return None, ValueKind.POS_INF if v > 0 else ValueKind.NEG_INF
    return v, ValueKind.FINITE


def decode_value(v: float | None, kind: int | None) -> float:
    """The value a (REAL, kind) pair stores; NaN for kind NAN and for a run without points."""
    if kind == ValueKind.FINITE:
        return math.nan if v is None else float(v)
    if kind == ValueKind.POS_INF:
        return math.inf
    if kind == ValueKind.NEG_INF:
        return -math.inf
    return math.nan


def points_of_rows(rows: list[tuple[Any, ...]]) -> Points:
    """Points from (step, value, value_kind, lr, wall_time_s) rows, decoded column-wise with
    numpy: a 10^6-point run is read in well under a second."""
    if not rows:
        return Points.of([], [])
    steps, values, kinds, lr, wall_time_s = zip(*rows, strict=True)
    return points_of_columns(steps, values, kinds, lr, wall_time_s)


_CHUNK_COLUMNS = (("steps", "<i8"), ("values", "<f8"), ("lr", "<f8"), ("wall_time_s", "<f8"))


def points_of_chunks(blobs: list[list[Any]], tail: Points) -> Points:
    """A run's points from its packed chunks (the blobs of steps, values, lr and wall time,
    chunk by chunk) followed by its unpacked rows (tail): both stores pack alike."""
    steps, values, lr, wall_time_s = (
        np.concatenate([np.frombuffer(bytes(b), dtype=dtype) for b in column]
                       + [getattr(tail, attr)])
        for column, (attr, dtype) in zip(blobs, _CHUNK_COLUMNS, strict=True)
    )  # fmt: skip
    return Points(steps.astype(np.int64), values.astype(np.float64), lr, wall_time_s)


def points_of_columns(
    steps: Sequence[int],
    values: Sequence[float | None],
    kinds: Sequence[int],
    lr: Sequence[float | None],
    wall_time_s: Sequence[float | None],
) -> Points:
    """Points from the columns of points rows (as points_of_rows decodes them), each a list."""
    kind = np.asarray(kinds, dtype=np.int8)
    value = np.asarray(values, dtype=np.float64)  # None (a non-finite kind) reads as NaN
    value[kind == ValueKind.NAN] = np.nan
    value[kind == ValueKind.POS_INF] = np.inf
    value[kind == ValueKind.NEG_INF] = -np.inf
    return Points.of(
        np.asarray(steps, dtype=np.int64),
        value,
        np.asarray(lr, dtype=np.float64),
        np.asarray(wall_time_s, dtype=np.float64),
    )


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass
class _Pending:
    """A write waiting for the group commit that will hold it."""

    op: Callable[[Cursor], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class SqliteStore:
    """Studies, runs and points in one SQLite file.

    Args:
        path: the database file (":memory:" for tests of one connection).
        exclusive: hold a lock file beside the database, so that a second service on the same
            file is refused, and refuse a corrupt database at open (the service opens so).
        clock: injected for tests; seconds since the epoch.

    Example:
        >>> store = SqliteStore("runs.db")
        >>> study, created = store.create_study(StudySpec("sweep", "val_loss", Direction.MIN))
    """

    shared_by_replicas: ClassVar[bool] = False  # one service per file (a lock file)

    dialect: Dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        exclusive: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()  # one committer at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._closed = False
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock_file: IO[str] | None = None
        self._identity: tuple[int, int] | None = None
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._lock_file = _take_lock(self.path)
        try:
            self._conn: sqlite3.Connection | None = self._connect()
            if exclusive and not self._memory:
                _check_integrity(self._conn, self.path)
        except sqlite3.Error as e:
            self._release_lock()
            if _is_corruption(e):
                raise StoreUnavailableError(_corrupt_message(self.path, str(e))) from e
            raise StoreUnavailableError(
                f"cannot open the SQLite database at {self.path}: {e}. Check the path and "
                "its permissions."
            ) from e
        if not self._memory:
            self._identity = _identity(self.path)
        try:
            self._migrate()
        except BaseException:
            self._release_lock()
            raise
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        if not self._memory:
            # Checkpoints off the commit path: a commit that also copied the WAL back into
            # the database (SQLite's default, every 1,000 pages) would hold every writer
            # queued behind it; a thread of the store checkpoints passively instead.
            assert self._conn is not None
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="forecaster-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop_checkpoints.wait(CHECKPOINT_EVERY_S):
            try:
                if conn is None:
                    conn = self._connect(create=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # a deleted file, a busy moment: the next round, or close(), does it
        if conn is not None:
            conn.close()

    def _connect(self, create: bool = True) -> sqlite3.Connection:
        """A connection with the store's pragmas; create=False (the readers) never makes a
        new empty file where the database was deleted."""
        target = self.path if create else f"file:{quote(self.path)}?mode=rw"
        conn = sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, timeout=10.0, uri=not create
        )
        # Rows are read by column name (row["last_step"]), never by position.
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @classmethod
    def from_url(cls, url: str, *, exclusive: bool = False) -> SqliteStore:
        """sqlite:///relative.db, sqlite:////absolute/path.db, sqlite:///:memory:, or a bare
        file path (what a user would type)."""
        path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else "/" + url
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise InvalidArgumentError(f"no file in database URL {url!r}; e.g. sqlite:///runs.db")
        return cls(Path(path).expanduser() if path != ":memory:" else path, exclusive=exclusive)

    # -- plumbing ---------------------------------------------------------------------------

    def _wrap_error(self, e: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"SQLite error on {self.path}: {e}")

    def check(self) -> None:
        """Raises StoreUnavailableError when this store can no longer acknowledge writes: it
        is closed, or the file at its path is no longer the one it opened."""
        if self._closed:
            raise StoreUnavailableError("the store is closed.")
        if self._identity is None:
            return
        try:
            now: tuple[int, int] | None = _identity(self.path)
        except FileNotFoundError:
            now = None
        if now != self._identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StoreUnavailableError(
                f"the database file {self.path} was {what} while the service ran: nothing "
                "more is acknowledged. Restore the file (or move the new one aside) and "
                "restart the service."
            )

    def _write(self, op: Callable[[Cursor], T]) -> T:
        """Runs op(cursor) in a write transaction; returns once that transaction committed.

        Group commit: the writer that holds the lock commits every write queued meanwhile.
        """
        pending = _Pending(op)
        with self._queue_lock:
            self._queue.append(pending)
        with self._lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if pending.error is not None:
            raise pending.error
        result: T = pending.result
        return result

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the batch, each write in its own savepoint."""
        try:
            self.check()
            assert self._conn is not None
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                for item in batch:
                    cur.execute("SAVEPOINT one_write")
                    try:
                        item.result = item.op(cur)
                    except Exception as e:
                        cur.execute("ROLLBACK TO one_write")
                        item.error = self._wrap_error(e) if isinstance(e, sqlite3.Error) else e
                    cur.execute("RELEASE one_write")
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
            # A file deleted during the commit got the write, but the path no longer leads
            # to it: refuse rather than acknowledge.
            self.check()
        except Exception as e:
            # Nothing of the batch was committed: a write that had succeeded fails with it.
            error = self._wrap_error(e) if isinstance(e, sqlite3.Error) else e
            for item in batch:
                if not isinstance(item.error, ForecasterError):
                    item.error = error
        finally:
            for item in batch:
                item.done = True

    def _reader(self) -> sqlite3.Connection:
        if self._closed or self._conn is None:
            raise StoreUnavailableError("the store is closed.")
        if self._memory:
            return self._conn
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            try:
                conn = self._connect(create=False)
            except sqlite3.Error as e:
                self.check()  # names a deleted or replaced file
                raise self._wrap_error(e) from e
            self._readers.conn = conn
            with self._queue_lock:
                self._reader_conns.append(conn)
        return conn

    @contextmanager
    def _read(self, snapshot: bool = True) -> Iterator[Cursor]:
        """A read on this thread's connection: in one transaction (one snapshot) when it
        reads more than once; a single statement is its own (snapshot=False saves the
        BEGIN and COMMIT on the hot paths)."""
        if self._memory:
            with self._lock:
                yield from self._read_on(self._reader(), snapshot)
        else:
            yield from self._read_on(self._reader(), snapshot)

    def _read_on(self, conn: sqlite3.Connection, snapshot: bool) -> Iterator[Cursor]:
        cur = conn.cursor()
        try:
            if snapshot:
                cur.execute("BEGIN")
            yield cur
            if snapshot:
                cur.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                cur.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self._wrap_error(e) from e
            raise
        finally:
            cur.close()

    def _migrate(self) -> None:
        def op(cur: Cursor) -> None:
            cur.execute(schema.spell(schema.CREATE_VERSION_TABLE, self.dialect))
            current = (
                cur.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()["v"] or 0
            )
            if current > schema.LATEST_VERSION:
                raise StoreUnavailableError(
                    f"the database {self.path} has schema version {current}, newer than this "
                    f"forecaster knows ({schema.LATEST_VERSION}). Upgrade forecaster."
                )
            for version, description, statements in schema.migrations(self.dialect):
                if version <= current:
                    continue
                for sql in statements:
                    cur.execute(sql)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, description, self._clock()),
                )

        self._write(op)

    def schema_version(self) -> int:
        with self._read() as cur:
            return int(
                cur.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()["v"]
            )

    def close(self) -> None:
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            self._stop_checkpoints.set()
            checkpointer.join(10)
        with self._lock:
            if self._conn is not None:
                self._closed = True
                with self._queue_lock:
                    readers, self._reader_conns = self._reader_conns, []
                for conn in readers:
                    conn.close()
                # A deleted or read-only file: nothing more to flush there.
                with suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None
                self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    # -- studies ----------------------------------------------------------------------------

    _STUDY_COLS = (
        "s.id AS study_id, s.name, s.metric, s.direction, s.max_step, s.target, s.policy, "
        "s.policy_params, s.forecaster, s.created_at, s.n_runs, s.n_done, s.metric_kind, "
        "s.metric_lower, s.metric_upper"
    )

    @staticmethod
    def _study(row: Any) -> Study:
        spec = StudySpec(
            name=row["name"],
            metric=row["metric"],
            direction=Direction(row["direction"]),
            max_step=row["max_step"],
            target=row["target"],
            policy=row["policy"],
            policy_params=json.loads(row["policy_params"]),
            forecaster=row["forecaster"],
            metric_kind=row["metric_kind"],
            metric_lower=row["metric_lower"],
            metric_upper=row["metric_upper"],
        )
        return Study(
            spec, created_at_s=row["created_at"], n_runs=row["n_runs"], n_done=row["n_done"]
        )

    def _study_row(self, cur: Cursor, name: str) -> Any:
        return cur.execute(
            f"SELECT {self._STUDY_COLS} FROM studies s WHERE s.name = ?", (name,)
        ).fetchone()

    def _study_id(self, cur: Cursor, name: str) -> Any:
        row = cur.execute("SELECT id, direction FROM studies WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no study named {name!r}; create it with CreateStudy first.")
        return row

    def create_study(self, spec: StudySpec) -> tuple[Study, bool]:
        def op(cur: Cursor) -> tuple[Study, bool]:
            now = self._clock()
            inserted = cur.execute(
                "INSERT INTO studies (name, metric, direction, max_step, target, policy, "
                "policy_params, forecaster, created_at, metric_kind, metric_lower, metric_upper) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (
                    spec.name,
                    spec.metric,
                    spec.direction.value,
                    spec.max_step,
                    spec.target,
                    spec.policy,
                    canonical_json(spec.policy_params),
                    spec.forecaster,
                    now,
                    spec.metric_kind,
                    spec.metric_lower,
                    spec.metric_upper,
                ),
            ).rowcount
            if inserted:
                return Study(spec, now, 0), True
            existing = self._study(self._study_row(cur, spec.name))
            diff = existing.spec.differences(spec)
            if diff:
                stored = ", ".join(f"{f}={shown(getattr(existing.spec, f))}" for f in diff)
                raise AlreadyExistsError(
                    f"study {spec.name!r} exists with another {', '.join(diff)} "
                    f"(stored: {stored}). Use another name, or send the same definition."
                )
            return existing, False

        return self._write(op)

    def get_study(self, name: str) -> Study:
        with self._read(snapshot=False) as cur:
            row = self._study_row(cur, name)
        if row is None:
            raise NotFoundError(f"no study named {name!r}; create it with CreateStudy first.")
        return self._study(row)

    def list_studies(self) -> list[Study]:
        with self._read() as cur:
            rows = cur.execute(f"SELECT {self._STUDY_COLS} FROM studies s ORDER BY s.id").fetchall()
        return [self._study(r) for r in rows]

    # -- runs -------------------------------------------------------------------------------

    _RUN_COLS = (
        "s.name AS study_name, s.direction, r.id AS run_id, r.name AS run_name, r.config, "
        "r.max_step, r.lr_schedule, r.state, r.created_at, r.finished_at, r.n_points, "
        "r.last_step, r.last_value, r.last_kind, r.best_value, r.packed_points, "
        "r.packed_last_step, q.requested_at AS stop_requested_at, q.note AS stop_note"
    )
    # Every read of runs: `SELECT {_RUN_COLS} {_RUN_FROM} WHERE ...`.
    _RUN_FROM = (
        "FROM runs r JOIN studies s ON r.study_id = s.id "
        "LEFT JOIN stop_requests q ON q.run_id = r.id"
    )
    # Appended to the SELECT of the run a write changes: locks its row until the commit
    # (PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the whole database).
    _FOR_UPDATE = ""

    @staticmethod
    def _run(row: Any, spec: RunSpec | None = None) -> Run:
        """The run a row of _RUN_COLS holds; spec: its spec when already decoded."""
        return Run(
            study=row["study_name"],
            spec=SqliteStore._run_spec(row) if spec is None else spec,
            state=RunState(row["state"]),
            created_at_s=row["created_at"],
            finished_at_s=row["finished_at"],
            n_points=row["n_points"],
            last_step=row["last_step"],
            last_value=decode_value(row["last_value"], row["last_kind"]),
            best_value=_nan_if_none(row["best_value"]),
            stop_request=(
                None
                if row["stop_requested_at"] is None
                else StopRequest(row["stop_requested_at"], row["stop_note"])
            ),
        )

    @staticmethod
    def _run_spec(row: Any) -> RunSpec:
        stored_schedule = row["lr_schedule"]
        return RunSpec(
            name=row["run_name"],
            config=json.loads(row["config"]),
            max_step=row["max_step"],
            lr_schedule=(
                None
                if stored_schedule is None
                else LrSchedule.from_dict(json.loads(stored_schedule))
            ),
        )

    def _run_row(self, cur: Cursor, study: str, run: str, *, lock: bool = False) -> Any:
        row = cur.execute(
            f"SELECT {self._RUN_COLS} {self._RUN_FROM} "
            "WHERE s.name = ? AND r.name = ?" + (self._FOR_UPDATE if lock else ""),
            (study, run),
        ).fetchone()
        if row is None:
            self._study_id(cur, study)
            raise NotFoundError(
                f"no run named {run!r} in study {study!r}; start it with StartRun first."
            )
        return row

    @staticmethod
    def _update_standing(cur: Cursor, run_id: int) -> None:
        cur.execute(f"UPDATE runs SET standing = {schema.STANDING} WHERE id = ?", (run_id,))

    def start_run(self, study: str, spec: RunSpec) -> tuple[Run, bool]:
        schedule = None if spec.lr_schedule is None else canonical_json(spec.lr_schedule.to_dict())

        def op(cur: Cursor) -> tuple[Run, bool]:
            study_id = self._study_id(cur, study)["id"]
            inserted = cur.execute(
                "INSERT INTO runs (study_id, name, config, max_step, lr_schedule, state, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study_id, name) DO NOTHING",
                (
                    study_id,
                    spec.name,
                    canonical_json(spec.config),
                    spec.max_step,
                    schedule,
                    RunState.RUNNING.value,
                    self._clock(),
                ),
            ).rowcount
            row = self._run_row(cur, study, spec.name, lock=True)
            if inserted:
                cur.execute("UPDATE studies SET n_runs = n_runs + 1 WHERE id = ?", (study_id,))
                self._update_standing(cur, row["run_id"])
                return self._run(row), True
            existing = self._run(row)
            diff = [d for d in existing.spec.differences(spec) if d != "lr_schedule"]
            if diff:
                raise AlreadyExistsError(
                    f"run {spec.name!r} of study {study!r} exists with another "
                    f"{', '.join(diff)}. Use another run name, or send the same definition."
                )
            if spec.lr_schedule is not None and spec.lr_schedule != existing.spec.lr_schedule:
                # The planned schedule is not identity: a re-attached job may re-plan it.
                cur.execute(
                    "UPDATE runs SET lr_schedule = ? WHERE id = ?", (schedule, row["run_id"])
                )
                return replace(
                    existing, spec=replace(existing.spec, lr_schedule=spec.lr_schedule)
                ), False
            return existing, False

        return self._write(op)

    def get_run(self, study: str, run: str) -> Run:
        with self._read(snapshot=False) as cur:  # one statement (two only when not found)
            return self._run(self._run_row(cur, study, run))

    def list_runs(self, study: str, *, state: RunState | None = None) -> list[Run]:
        with self._read() as cur:
            study_id = self._study_id(cur, study)["id"]
            sql = f"SELECT {self._RUN_COLS} {self._RUN_FROM} WHERE r.study_id = ?"
            args: tuple[Any, ...] = (study_id,)
            if state is not None:
                sql += " AND r.state = ?"
                args += (state.value,)
            rows = cur.execute(sql + " ORDER BY r.id", args).fetchall()
        return [self._run(r) for r in rows]

    def best_standings(self, study: str, n: int = 2) -> list[tuple[str, float]]:
        """The n best standings of the study's runs (name, value), best first: bounded, one
        step down an index whatever the study's size."""
        with self._read(snapshot=False) as cur:
            study_id, direction = self._study_key(cur, study)
            order = "DESC" if direction == Direction.MAX.value else "ASC"
            rows = cur.execute(
                "SELECT name, standing FROM runs WHERE study_id = ? AND standing IS NOT NULL "
                f"ORDER BY standing {order}, id LIMIT ?",
                (study_id, n),
            ).fetchall()
        return [(r["name"], float(r["standing"])) for r in rows]

    def run_and_standings(
        self, study: str, run: str, n: int = 2
    ) -> tuple[Run, list[tuple[str, float]]]:
        """Two reads: one service per file, so nothing can write between them that this
        process would not know of (the engine of one service does not ask)."""
        return self.get_run(study, run), self.best_standings(study, n)

    def _study_key(self, cur: Cursor, name: str) -> tuple[int, str]:
        """(id, direction) of a study, kept once read: a study is never renamed, deleted nor
        turned around, so the one row need not be read on every report. Only committed rows
        are kept (this is called on the read side)."""
        keys: dict[str, tuple[int, str]] = self.__dict__.setdefault("_study_keys", {})
        key = keys.get(name)
        if key is None:
            row = self._study_id(cur, name)  # NotFoundError for a study that is not there
            key = (int(row["id"]), str(row["direction"]))
            if len(keys) >= 100_000:  # bounded however many studies come and go
                keys.clear()
            keys[name] = key
        return key

    def finish_run(self, study: str, run: str, state: RunState) -> Run:
        if state is RunState.RUNNING:
            raise InvalidArgumentError("FinishRun: state must be FINISHED, STOPPED or FAILED.")

        def op(cur: Cursor) -> Run:
            row = self._run_row(cur, study, run, lock=True)
            current = RunState(row["state"])
            if current is state:
                return self._run(row)
            if current is not RunState.RUNNING:
                raise FailedPreconditionError(
                    f"run {run!r} of study {study!r} is already {current.value}; "
                    f"it cannot become {state.value}."
                )
            now = self._clock()
            cur.execute(
                "UPDATE runs SET state = ?, finished_at = ? WHERE id = ?",
                (state.value, now, row["run_id"]),
            )
            cur.execute(
                "UPDATE studies SET n_done = n_done + 1 WHERE id = "
                "(SELECT study_id FROM runs WHERE id = ?)",
                (row["run_id"],),
            )
            self._update_standing(cur, row["run_id"])
            return replace(self._run(row), state=state, finished_at_s=now)

        return self._write(op)

    # -- decisions --------------------------------------------------------------------------

    _DECISION_COLS = (
        "d.at_step, d.fitted_points, d.votes_before, d.votes, d.action, d.reason, "
        "d.explanation, d.probabilities, d.expected_saved_steps, d.policy, d.forecast_final"
    )

    @staticmethod
    def _decision(row: Any) -> StoredDecision:
        return StoredDecision(
            at_step=row["at_step"],
            fitted_points=row["fitted_points"],
            votes_before=row["votes_before"],
            votes=row["votes"],
            action=row["action"],
            reason=row["reason"],
            explanation=row["explanation"],
            probabilities=json.loads(row["probabilities"]),
            expected_saved_steps=row["expected_saved_steps"],
            policy=row["policy"],
            forecast_final=row["forecast_final"],
        )

    def save_decision(self, study: str, run: str, decision: StoredDecision) -> None:
        final = decision.forecast_final

        final = None if final is None or not math.isfinite(final) else float(final)
        now = self._clock()
        probabilities = json.dumps(decision.probabilities, sort_keys=True)

        def op(cur: Cursor) -> None:
            run_id = self._run_row(cur, study, run, lock=True)["run_id"]
            last = cur.execute(
                "SELECT idx, action, reason FROM decision_history WHERE run_id = ? "
                "ORDER BY idx DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            changed = (decision.action, decision.reason)
            if last is None or (last["action"], last["reason"]) != changed:
                cur.execute(
                    "INSERT INTO decision_history (run_id, idx, at_step, action, reason, "
                    "explanation, probabilities, policy, forecast_final, decided_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        0 if last is None else last["idx"] + 1,
                        decision.at_step,
                        decision.action,
                        decision.reason,
                        decision.explanation,
                        probabilities,
                        decision.policy,
                        final,
                        now,
                    ),
                )
            cur.execute(
                "INSERT INTO decisions (run_id, at_step, fitted_points, votes_before, "
                "votes, action, reason, explanation, probabilities, expected_saved_steps, policy, "
                "forecast_final, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET at_step = excluded.at_step, "
                "fitted_points = excluded.fitted_points, votes_before = excluded.votes_before, "
                "votes = excluded.votes, action = excluded.action, reason = excluded.reason, "
                "explanation = excluded.explanation, probabilities = excluded.probabilities, "
                "expected_saved_steps = excluded.expected_saved_steps, policy = excluded.policy, "
                "forecast_final = excluded.forecast_final, decided_at = excluded.decided_at",
                (
                    run_id,
                    decision.at_step,
                    decision.fitted_points,
                    decision.votes_before,
                    decision.votes,
                    decision.action,
                    decision.reason,
                    decision.explanation,
                    probabilities,
                    decision.expected_saved_steps,
                    decision.policy,
                    final,
                    now,
                ),
            )
            self._update_standing(cur, run_id)

        self._write(op)

    def decision_history(
        self, study: str, run: str, *, start: int = 0, limit: int | None = None
    ) -> list[DecisionChange]:
        with self._read() as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            rows = cur.execute(
                "SELECT idx, at_step, action, reason, explanation, probabilities, policy, "
                "forecast_final, decided_at FROM decision_history WHERE run_id = ? AND idx >= ? "
                "ORDER BY idx LIMIT ?",
                (run_id, max(int(start), 0), _MANY if limit is None else max(int(limit), 0)),
            ).fetchall()
        return [
            DecisionChange(
                index=row["idx"],
                decided_at_s=row["decided_at"],
                at_step=row["at_step"],
                action=row["action"],
                reason=row["reason"],
                explanation=row["explanation"],
                probabilities=json.loads(row["probabilities"]),
                policy=row["policy"],
                forecast_final=row["forecast_final"],
            )
            for row in rows
        ]

    def request_stop(self, study: str, run: str, note: str = "") -> Run:
        def op(cur: Cursor) -> Run:
            row = self._run_row(cur, study, run, lock=True)
            if row["stop_requested_at"] is not None:
                return self._run(row)
            state = RunState(row["state"])
            if state is not RunState.RUNNING:
                raise FailedPreconditionError(
                    f"run {run!r} of study {study!r} is already {state.value}: there is "
                    "nothing to stop."
                )
            cur.execute(
                "INSERT INTO stop_requests (run_id, note, requested_at) VALUES (?, ?, ?)",
                (row["run_id"], note, self._clock()),
            )
            return self._run(self._run_row(cur, study, run))

        return self._write(op)

    def get_decision(self, study: str, run: str) -> StoredDecision | None:
        with self._read() as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            row = cur.execute(
                f"SELECT {self._DECISION_COLS} FROM decisions d WHERE d.run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else self._decision(row)

    def list_decisions(self, study: str) -> dict[str, StoredDecision]:
        with self._read() as cur:
            study_id = self._study_id(cur, study)["id"]
            rows = cur.execute(
                f"SELECT r.name AS run_name, {self._DECISION_COLS} FROM decisions d "
                "JOIN runs r ON d.run_id = r.id WHERE r.study_id = ?",
                (study_id,),
            ).fetchall()
        return {row["run_name"]: self._decision(row) for row in rows}

    # -- points -----------------------------------------------------------------------------

    def append_points(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> AppendResult:
        if not len(points):
            raise InvalidArgumentError(f"ReportMetrics: the batch for run {run!r} is empty.")
        kinds_all = [encode_value(float(v)) for v in points.values]
        schedule = None if lr_schedule is None else canonical_json(lr_schedule.to_dict())

        def op(cur: Cursor) -> AppendResult:
            row = self._run_row(cur, study, run, lock=True)
            run_id, last_step, state = row["run_id"], int(row["last_step"]), RunState(row["state"])
            if state is not RunState.RUNNING:
                raise FailedPreconditionError(
                    f"run {run!r} of study {study!r} is {state.value}: it accepts no more points. "
                    "Start a new run to keep reporting."
                )
            old = points.steps <= last_step
            if old.any():
                self._check_retry(cur, run_id, study, run, points.take(old))
            new = points.take(~old)
            best = _nan_if_none(row["best_value"])
            if len(new):
                kinds = [kv for kv, o in zip(kinds_all, old.tolist(), strict=True) if not o]
                cur.executemany(
                    "INSERT INTO points (run_id, step, value, value_kind, lr, wall_time_s) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, s, kv[0], int(kv[1]), _none_if_nan(lr), _none_if_nan(w))
                        for s, kv, lr, w in zip(
                            new.steps.tolist(),
                            kinds,
                            new.lr.tolist(),
                            new.wall_time_s.tolist(),
                            strict=True,
                        )
                    ],
                )
                direction = Direction(row["direction"])
                finite = new.values[np.isfinite(new.values)]
                if len(finite):
                    batch_best = float(finite.min() if direction is Direction.MIN else finite.max())
                    if math.isnan(best) or direction.better(batch_best, best):
                        best = batch_best
                last_value, last_kind = kinds[-1]
                cur.execute(
                    "UPDATE runs SET n_points = n_points + ?, last_step = ?, last_value = ?, "
                    "last_kind = ?, best_value = ? WHERE id = ?",
                    (
                        len(new),
                        int(new.steps[-1]),
                        last_value,
                        int(last_kind),
                        _none_if_nan(best),
                        run_id,
                    ),
                )
                self._update_standing(cur, run_id)
            if len(new):
                self._pack(cur, run_id, int(row["n_points"]) + len(new), row)
            if schedule is not None:
                cur.execute("UPDATE runs SET lr_schedule = ? WHERE id = ?", (schedule, run_id))
            # The run as it now is, without reading back the row this transaction just wrote.
            updated = self._run(row)
            if len(new):
                updated = replace(
                    updated,
                    n_points=updated.n_points + len(new),
                    last_step=int(new.steps[-1]),
                    last_value=float(new.values[-1]),
                    best_value=best,
                )
            if lr_schedule is not None:
                updated = replace(updated, spec=replace(updated.spec, lr_schedule=lr_schedule))
            return AppendResult(updated, len(new), last_step, new)

        return self._write(op)

    @staticmethod
    def _check_retry(cur: Cursor, run_id: int, study: str, run: str, old: Points) -> None:
        """Points at or below the last stored step must be an exact retry of stored ones."""
        stored = {
            row["step"]: decode_value(row["value"], row["value_kind"])
            for row in cur.execute(
                "SELECT step, value, value_kind FROM points WHERE run_id = ? "
                "AND step BETWEEN ? AND ?",
                (run_id, int(old.steps[0]), int(old.steps[-1])),
            ).fetchall()
        }
        for step, value in zip(old.steps.tolist(), old.values.tolist(), strict=True):
            if step not in stored:
                raise InvalidArgumentError(
                    f"ReportMetrics: step {step} is at or below the last stored step of run "
                    f"{run!r} (study {study!r}) but was never stored. Send points in step order."
                )
            was = stored[step]
            if not (was == value or (math.isnan(was) and math.isnan(value))):
                raise InvalidArgumentError(
                    f"ReportMetrics: step {step} of run {run!r} (study {study!r}) is already "
                    f"stored with value {was!r}; got {value!r}. Steps are write-once."
                )

    def _pack(self, cur: Cursor, run_id: int, n_points: int, row: Any) -> None:
        """Packs the run's unpacked points into one chunk once there are CHUNK_POINTS of
        them (n_points: the run's count after this write; row: its row before): each point
        is packed once, and a read is a few chunks and a short tail."""
        if n_points - row["packed_points"] < CHUNK_POINTS:
            return
        tail = points_of_rows(self._point_rows(cur, run_id, row["packed_last_step"]))
        cur.execute(
            "INSERT INTO point_chunks (run_id, first_step, last_step, n, steps, vals, lr, "
            "wall_time_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                int(tail.steps[0]),
                int(tail.steps[-1]),
                len(tail),
                tail.steps.astype("<i8").tobytes(),
                tail.values.astype("<f8").tobytes(),
                tail.lr.astype("<f8").tobytes(),
                tail.wall_time_s.astype("<f8").tobytes(),
            ),
        )
        cur.execute(
            "UPDATE runs SET packed_points = packed_points + ?, packed_last_step = ? WHERE id = ?",
            (len(tail), int(tail.steps[-1]), run_id),
        )

    def get_points(
        self, study: str, run: str, *, after_step: int = -1, limit: int | None = None
    ) -> Points:
        points = self._all_points(study, run)
        if after_step < 0 and limit is None:
            return points
        start = int(np.searchsorted(points.steps, after_step, side="right"))
        end = len(points) if limit is None else start + max(int(limit), 0)
        cut = slice(start, end)
        return Points(
            points.steps[cut], points.values[cut], points.lr[cut], points.wall_time_s[cut]
        )

    def _all_points(self, study: str, run: str) -> Points:
        with self._read() as cur:
            row = self._run_row(cur, study, run)
            run_id, packed_last_step = row["run_id"], row["packed_last_step"]
            chunks = self._chunk_rows(cur, run_id)
            tail = points_of_rows(self._point_rows(cur, run_id, packed_last_step))
        if not chunks:
            return tail
        columns = ("steps", "vals", "lr", "wall_time_s")
        return points_of_chunks([[c[name] for c in chunks] for name in columns], tail)

    @staticmethod
    def _chunk_rows(cur: Cursor, run_id: int) -> list[Any]:
        rows: list[Any] = cur.execute(
            "SELECT steps, vals, lr, wall_time_s FROM point_chunks WHERE run_id = ? "
            "ORDER BY first_step",
            (run_id,),
        ).fetchall()
        return rows

    @staticmethod
    def _point_rows(cur: Cursor, run_id: int, after_step: int = -1) -> list[tuple[Any, ...]]:
        # The hot path (every cold read of a curve's tail): plain tuples, unpacked by the
        # names of the SELECT beside them; a sqlite3.Row per point costs ~10% of a report.
        factory, cur.row_factory = cur.row_factory, None
        try:
            rows: list[tuple[Any, ...]] = cur.execute(
                "SELECT step, value, value_kind, lr, wall_time_s FROM points WHERE run_id = ? "
                "AND step > ? ORDER BY step",
                (run_id, after_step),
            ).fetchall()
        finally:
            cur.row_factory = factory
        return rows


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _take_lock(path: str) -> IO[str]:
    """An exclusive lock on <database>.lock, held while the service runs; released by the
    kernel when the process ends, however it ends."""
    lock_path = f"{path}.lock"
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreUnavailableError(
            f"the SQLite database {path} is in use by another forecaster service ({holder}); "
            "stop it first, or give this one its own --db. Several replicas on one database "
            "need PostgreSQL (a postgresql:// URL)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """Refuses a database whose pages are corrupt (PRAGMA quick_check), at open."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        raise sqlite3.DatabaseError("database disk image is malformed: " + "; ".join(rows[:3]))


def _is_corruption(e: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT and SQLITE_NOTADB (not a permission or a missing folder)."""
    text = str(e)
    return "malformed" in text or "not a database" in text


def _corrupt_message(path: str, why: str) -> str:
    return (
        f"the SQLite database {path} is corrupt or not a database ({why}). Stop here and "
        f"keep the file: restore it from a backup, or recover what is readable with "
        f"`sqlite3 {path} .recover | sqlite3 recovered.db` and start on recovered.db, or move "
        "it aside to start with an empty database."
    )
