"""PostgresStore: the store for several service replicas, on one PostgreSQL database.

The SQL, the checks and the summary rows are SqliteStore's (store/sqlite.py); what is
PostgreSQL's own is here: a pool of connections (psycopg-pool), a transaction per call on a
connection of the pool, row locks instead of SQLite's one writer (the run a write changes is
read FOR UPDATE, so two replicas appending to the same run take turns, and the second sees the
first's points: an identical retry stores nothing, a conflicting one is refused), and
migrations under an advisory lock, so replicas starting together migrate once. PostgreSQL
commits concurrent transactions with one WAL flush by itself (group commit), so writes are
not queued here. Durability: a method returns after COMMIT, with synchronous_commit as the
server has it (on by default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from forecaster.errors import StoreUnavailableError
from forecaster.store.schema import Dialect
from forecaster.store.sqlite import Cursor, SqliteStore

T = TypeVar("T")

# Any 64-bit number, the same in every replica: the key of the advisory lock of migrations.
_MIGRATION_LOCK = 0x666F72656361  # "foreca"
# A write that met a deadlock or a serialization failure is tried again this many times.
_RETRIES = 3


class _QmarkCursor:
    """A psycopg cursor that takes SQLite's "?" placeholders (our SQL has no other "?" or
    "%"), so that both stores run the same statements."""

    _spelled: dict[str, str] = {}

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self.raw = cursor

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
        return self.raw.rowcount


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
        pool_size: connections kept open (the most calls at once on this replica).
        connect_timeout_s: how long opening waits for the server before it gives up.

    Example:
        >>> store = PostgresStore("postgresql://forecaster@db:5432/forecaster")
    """

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
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 2),  # migrating holds two
            kwargs={"row_factory": dict_row, "autocommit": False},
            open=False,
            name="forecaster",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as e:
            self._pool.close()
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
        self.check()
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as raw:
                yield _QmarkCursor(raw)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise
        except (psycopg.Error, PoolTimeout) as e:
            raise self._wrap_error(e) from e

    @contextmanager
    def _read(self, snapshot: bool = True) -> Iterator[Cursor]:
        with self._transaction() as cur:
            yield cur

    def _migrate(self) -> None:
        with self._transaction() as cur:
            # Held until this transaction ends, while SqliteStore's migration runs on another
            # connection of the pool: replicas starting together migrate once, in turn.
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            super()._migrate()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()

    @staticmethod
    def _chunk_rows(cur: Cursor, run_id: int) -> list[Any]:
        raw: psycopg.Cursor[Any] = cur.raw
        # Binary results: the arrays come as bytes, not as hex text to decode.
        raw.execute(
            "SELECT steps, vals, lr, wall_time_s FROM point_chunks WHERE run_id = %s "
            "ORDER BY first_step",
            (run_id,),
            binary=True,
        )
        return raw.fetchall()

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
