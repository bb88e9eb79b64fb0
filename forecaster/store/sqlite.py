"""SqliteStore: the embedded default store, one SQLite file in WAL mode.

Durability: journal_mode=WAL with synchronous=FULL, and every write is one explicit
transaction; a method returns only after COMMIT, so an acknowledged point survives a crash
(SIGKILL, power loss) of the service. NaN and +/-inf round-trip exactly through a value kind
column, because SQLite reads a stored NaN back as NULL.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.curves import Direction, LrSchedule, Points
from forecaster.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
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
from forecaster.store.schema import ValueKind


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


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


class SqliteStore:
    """Studies, runs and points in one SQLite file.

    Example:
        >>> store = SqliteStore("runs.db")
        >>> study, created = store.create_study(StudySpec("sweep", "val_loss", Direction.MIN))
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            # Rows are read by column name (row["last_step"]), never by position.
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise StoreUnavailableError(
                f"cannot open the SQLite database at {self.path}: {e}. Check the path and "
                "its permissions."
            ) from e
        self._migrate()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """sqlite:///relative.db, sqlite:////absolute/path.db or sqlite:///:memory:."""
        path = url.removeprefix("sqlite://")
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise InvalidArgumentError(f"no file in database URL {url!r}; e.g. sqlite:///runs.db")
        return cls(Path(path).expanduser() if path != ":memory:" else path)

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        """One transaction under the store's lock; driver errors become StoreUnavailableError."""
        with self._lock:
            if self._conn is None:
                raise StoreUnavailableError("the store is closed.")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cur
                cur.execute("COMMIT")
            except BaseException as e:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreUnavailableError(f"SQLite error on {self.path}: {e}") from e
                raise
            finally:
                cur.close()

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute(schema.CREATE_VERSION_TABLE)
            current = (
                cur.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()["v"] or 0
            )
            if current > schema.LATEST_VERSION:
                raise StoreUnavailableError(
                    f"the database {self.path} has schema version {current}, newer than this "
                    f"forecaster knows ({schema.LATEST_VERSION}). Upgrade forecaster."
                )
            for version, description, statements in schema.MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    cur.execute(sql)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, description, self._clock()),
                )

    def schema_version(self) -> int:
        with self._tx(write=False) as cur:
            return int(
                cur.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()["v"]
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None

    # -- studies ----------------------------------------------------------------------------

    _STUDY_COLS = (
        "s.id AS study_id, s.name, s.metric, s.direction, s.max_step, s.target, s.policy, "
        "s.policy_params, s.forecaster, s.created_at, "
        "(SELECT COUNT(*) FROM runs r WHERE r.study_id = s.id) AS n_runs"
    )

    @staticmethod
    def _study(row: sqlite3.Row) -> Study:
        spec = StudySpec(
            name=row["name"],
            metric=row["metric"],
            direction=Direction(row["direction"]),
            max_step=row["max_step"],
            target=row["target"],
            policy=row["policy"],
            policy_params=json.loads(row["policy_params"]),
            forecaster=row["forecaster"],
        )
        return Study(spec, created_at_s=row["created_at"], n_runs=row["n_runs"])

    def _study_row(self, cur: sqlite3.Cursor, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = cur.execute(
            f"SELECT {self._STUDY_COLS} FROM studies s WHERE s.name = ?", (name,)
        ).fetchone()
        return row

    def create_study(self, spec: StudySpec) -> tuple[Study, bool]:
        with self._tx() as cur:
            row = self._study_row(cur, spec.name)
            if row is not None:
                existing = self._study(row)
                diff = existing.spec.differences(spec)
                if diff:
                    stored = ", ".join(f"{f}={shown(getattr(existing.spec, f))}" for f in diff)
                    raise AlreadyExistsError(
                        f"study {spec.name!r} exists with another {', '.join(diff)} "
                        f"(stored: {stored}). Use another name, or send the same definition."
                    )
                return existing, False
            now = self._clock()
            cur.execute(
                "INSERT INTO studies (name, metric, direction, max_step, target, policy, "
                "policy_params, forecaster, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ),
            )
            return Study(spec, now, 0), True

    def get_study(self, name: str) -> Study:
        with self._tx(write=False) as cur:
            row = self._study_row(cur, name)
        if row is None:
            raise NotFoundError(f"no study named {name!r}; create it with CreateStudy first.")
        return self._study(row)

    def list_studies(self) -> list[Study]:
        with self._tx(write=False) as cur:
            rows = cur.execute(f"SELECT {self._STUDY_COLS} FROM studies s ORDER BY s.id").fetchall()
        return [self._study(r) for r in rows]

    # -- runs -------------------------------------------------------------------------------

    _RUN_COLS = (
        "s.name AS study_name, s.direction, r.id AS run_id, r.name AS run_name, r.config, "
        "r.max_step, r.lr_schedule, r.state, r.created_at, r.finished_at, r.n_points, "
        "r.last_step, r.last_value, r.last_kind, r.best_value, "
        "q.requested_at AS stop_requested_at, q.note AS stop_note"
    )
    # Every read of runs: `SELECT {_RUN_COLS} {_RUN_FROM} WHERE ...`.
    _RUN_FROM = (
        "FROM runs r JOIN studies s ON r.study_id = s.id "
        "LEFT JOIN stop_requests q ON q.run_id = r.id"
    )

    @staticmethod
    def _run(row: sqlite3.Row) -> Run:
        stored_schedule = row["lr_schedule"]
        spec = RunSpec(
            name=row["run_name"],
            config=json.loads(row["config"]),
            max_step=row["max_step"],
            lr_schedule=(
                None
                if stored_schedule is None
                else LrSchedule.from_dict(json.loads(stored_schedule))
            ),
        )
        return Run(
            study=row["study_name"],
            spec=spec,
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

    def _run_row(self, cur: sqlite3.Cursor, study: str, run: str) -> sqlite3.Row:
        row: sqlite3.Row | None = cur.execute(
            f"SELECT {self._RUN_COLS} {self._RUN_FROM} WHERE s.name = ? AND r.name = ?",
            (study, run),
        ).fetchone()
        if row is None:
            if self._study_row(cur, study) is None:
                raise NotFoundError(f"no study named {study!r}; create it with CreateStudy first.")
            raise NotFoundError(
                f"no run named {run!r} in study {study!r}; start it with StartRun first."
            )
        return row

    def start_run(self, study: str, spec: RunSpec) -> tuple[Run, bool]:
        with self._tx() as cur:
            srow = self._study_row(cur, study)
            if srow is None:
                raise NotFoundError(f"no study named {study!r}; create it with CreateStudy first.")
            try:
                row = self._run_row(cur, study, spec.name)
            except NotFoundError:
                row = None
            schedule = (
                None if spec.lr_schedule is None else canonical_json(spec.lr_schedule.to_dict())
            )
            if row is not None:
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
                    return self._run(self._run_row(cur, study, spec.name)), False
                return existing, False
            cur.execute(
                "INSERT INTO runs (study_id, name, config, max_step, lr_schedule, state, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    srow["study_id"],
                    spec.name,
                    canonical_json(spec.config),
                    spec.max_step,
                    schedule,
                    RunState.RUNNING.value,
                    self._clock(),
                ),
            )
            return self._run(self._run_row(cur, study, spec.name)), True

    def get_run(self, study: str, run: str) -> Run:
        with self._tx(write=False) as cur:
            return self._run(self._run_row(cur, study, run))

    def list_runs(self, study: str, *, state: RunState | None = None) -> list[Run]:
        with self._tx(write=False) as cur:
            if self._study_row(cur, study) is None:
                raise NotFoundError(f"no study named {study!r}; create it with CreateStudy first.")
            sql = f"SELECT {self._RUN_COLS} {self._RUN_FROM} WHERE s.name = ?"
            args: tuple[Any, ...] = (study,)
            if state is not None:
                sql += " AND r.state = ?"
                args += (state.value,)
            rows = cur.execute(sql + " ORDER BY r.id", args).fetchall()
        return [self._run(r) for r in rows]

    def finish_run(self, study: str, run: str, state: RunState) -> Run:
        if state is RunState.RUNNING:
            raise InvalidArgumentError("FinishRun: state must be FINISHED, STOPPED or FAILED.")
        with self._tx() as cur:
            row = self._run_row(cur, study, run)
            current = RunState(row["state"])
            if current is state:
                return self._run(row)
            if current is not RunState.RUNNING:
                raise FailedPreconditionError(
                    f"run {run!r} of study {study!r} is already {current.value}; "
                    f"it cannot become {state.value}."
                )
            cur.execute(
                "UPDATE runs SET state = ?, finished_at = ? WHERE id = ?",
                (state.value, self._clock(), row["run_id"]),
            )
            return self._run(self._run_row(cur, study, run))

    # -- decisions --------------------------------------------------------------------------

    _DECISION_COLS = (
        "d.at_step, d.fitted_points, d.votes_before, d.votes, d.action, d.reason, "
        "d.explanation, d.probabilities, d.expected_saved_steps, d.policy, d.forecast_final"
    )

    @staticmethod
    def _decision(row: sqlite3.Row) -> StoredDecision:
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
        with self._tx() as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            last = cur.execute(
                "SELECT idx, action, reason FROM decision_history WHERE run_id = ? "
                "ORDER BY idx DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if last is None or (last["action"], last["reason"]) != (
                decision.action,
                decision.reason,
            ):
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
                "INSERT OR REPLACE INTO decisions (run_id, at_step, fitted_points, votes_before, "
                "votes, action, reason, explanation, probabilities, expected_saved_steps, policy, "
                "forecast_final, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def decision_history(
        self, study: str, run: str, *, start: int = 0, limit: int | None = None
    ) -> list[DecisionChange]:
        with self._tx(write=False) as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            rows = cur.execute(
                "SELECT idx, at_step, action, reason, explanation, probabilities, policy, "
                "forecast_final, decided_at FROM decision_history WHERE run_id = ? AND idx >= ? "
                "ORDER BY idx LIMIT ?",
                (run_id, max(int(start), 0), -1 if limit is None else max(int(limit), 0)),
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
        with self._tx() as cur:
            row = self._run_row(cur, study, run)
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

    def get_decision(self, study: str, run: str) -> StoredDecision | None:
        with self._tx(write=False) as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            row = cur.execute(
                f"SELECT {self._DECISION_COLS} FROM decisions d WHERE d.run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else self._decision(row)

    def list_decisions(self, study: str) -> dict[str, StoredDecision]:
        with self._tx(write=False) as cur:
            if self._study_row(cur, study) is None:
                raise NotFoundError(f"no study named {study!r}; create it with CreateStudy first.")
            rows = cur.execute(
                f"SELECT r.name AS run_name, {self._DECISION_COLS} FROM decisions d "
                "JOIN runs r ON d.run_id = r.id JOIN studies s ON r.study_id = s.id "
                "WHERE s.name = ?",
                (study,),
            ).fetchall()
        return {row["run_name"]: self._decision(row) for row in rows}

    # -- points -----------------------------------------------------------------------------

    def append_points(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> AppendResult:
        if not len(points):
            raise InvalidArgumentError(f"ReportMetrics: the batch for run {run!r} is empty.")
        with self._tx() as cur:
            row = self._run_row(cur, study, run)
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
            if len(new):
                kinds = [encode_value(float(v)) for v in new.values]
                cur.executemany(
                    "INSERT INTO points (run_id, step, value, value_kind, lr, wall_time_s) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, int(s), kv[0], kv[1], _none_if_nan(lr), _none_if_nan(w))
                        for s, kv, lr, w in zip(
                            new.steps, kinds, new.lr, new.wall_time_s, strict=True
                        )
                    ],
                )
                direction = Direction(row["direction"])
                best = _nan_if_none(row["best_value"])
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
                        last_kind,
                        _none_if_nan(best),
                        run_id,
                    ),
                )
            if lr_schedule is not None:
                cur.execute(
                    "UPDATE runs SET lr_schedule = ? WHERE id = ?",
                    (canonical_json(lr_schedule.to_dict()), run_id),
                )
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

    @staticmethod
    def _check_retry(cur: sqlite3.Cursor, run_id: int, study: str, run: str, old: Points) -> None:
        """Points at or below the last stored step must be an exact retry of stored ones."""
        stored = {
            row["step"]: decode_value(row["value"], row["value_kind"])
            for row in cur.execute(
                "SELECT step, value, value_kind FROM points WHERE run_id = ? "
                "AND step BETWEEN ? AND ?",
                (run_id, int(old.steps[0]), int(old.steps[-1])),
            )
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

    def get_points(
        self, study: str, run: str, *, after_step: int = -1, limit: int | None = None
    ) -> Points:
        with self._tx(write=False) as cur:
            run_id = self._run_row(cur, study, run)["run_id"]
            # The hot path (every cold read of a curve): plain tuples, unpacked by the names of
            # the SELECT beside them; a sqlite3.Row per point costs ~10% of a report under load.
            cur.row_factory = None
            rows = cur.execute(
                "SELECT step, value, value_kind, lr, wall_time_s FROM points WHERE run_id = ? "
                "AND step > ? ORDER BY step LIMIT ?",
                (run_id, int(after_step), -1 if limit is None else max(int(limit), 0)),
            ).fetchall()
        if not rows:
            return Points.of([], [])
        steps, values, kinds, lr, wall_time_s = zip(*rows, strict=True)
        return Points.of(
            steps,
            [decode_value(v, k) for v, k in zip(values, kinds, strict=True)],
            lr,
            wall_time_s,
        )
