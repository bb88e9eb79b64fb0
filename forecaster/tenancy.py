"""Tenants: the engine as one tenant sees it, for every transport (gRPC, an HTTP dashboard).

A tenant's study named "x" is stored as "<tenant>/x". A TenantEngine takes and returns names
as the tenant sends them, so no call of one tenant reads, lists, writes or learns the existence
of another tenant's studies: a name of theirs can only ever reach "<theirs>/...". The admin
tenant (an admin token, the single auth_token, or a service without tokens) sees the store's
names as they are, every tenant's included ("team-a/x").

The seam for a transport: resolve the caller to a Tenant (forecaster/server/auth.py), then
call `TenantEngine(engine, tenant)` and nothing else of the engine. Listings come as pages
(`Page`), whose token is opaque to the caller.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from forecaster.curves import Curve, LrSchedule, Points
from forecaster.engine import Engine, Ranking, ReportResult, RunSummary
from forecaster.errors import ForecasterError, InvalidArgumentError
from forecaster.models.prediction import ForecastSummary
from forecaster.policies import Decision
from forecaster.store import DecisionChange, Run, RunSpec, RunState, Study, StudySpec

T = TypeVar("T")
ADMIN_NAME = "*"
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Tenant:
    """Who a caller is: a tenant's name, or the admin ("*") that sees every study."""

    name: str

    def __post_init__(self) -> None:
        if self.name != ADMIN_NAME and not _TENANT_NAME.match(self.name):
            raise InvalidArgumentError(
                f"tenant name {self.name!r}: 1-64 letters, digits, '.', '_' or '-', starting "
                f"with a letter or digit; or {ADMIN_NAME!r} for the admin."
            )

    @property
    def admin(self) -> bool:
        return self.name == ADMIN_NAME


ADMIN = Tenant(ADMIN_NAME)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; next_token is "" on the last page."""

    items: list[T]
    next_token: str


def page_of(items: Sequence[T], key: Callable[[T], str], size: int, token: str) -> Page[T]:
    """items (in their stable order) after the one the token names, at most size of them.

    The token is the key of the last item of the previous page, encoded: a page never shifts
    when items are added after it (studies and runs are never deleted)."""
    start = 0
    if token:
        after = _decode_token(token)
        keys = [key(item) for item in items]
        if after not in keys:
            raise InvalidArgumentError(
                "page_token does not name an item of this listing: pass the next_page_token "
                "of the previous page of the same listing, or an empty one for the first."
            )
        start = keys.index(after) + 1
    chunk = list(items[start : start + size])
    more = start + size < len(items)
    return Page(chunk, encode_token(key(chunk[-1])) if more and chunk else "")


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidArgumentError(
            "page_token is not one this service gave: pass next_page_token unchanged."
        ) from None


class TenantEngine:
    """The Engine's public calls, scoped to one tenant (see the module's docstring)."""

    def __init__(self, engine: Engine, tenant: Tenant) -> None:
        self.engine = engine
        self.tenant = tenant
        self._prefix = "" if tenant.admin else f"{tenant.name}/"

    def stored(self, study: str) -> str:
        """The store's name of the tenant's study."""
        return self._prefix + study

    def shown(self, stored: str) -> str:
        return stored[len(self._prefix) :]

    def _mine(self, stored: str) -> bool:
        return stored.startswith(self._prefix)

    @contextlib.contextmanager
    def _as_sent(self) -> Iterator[None]:
        """Errors name the tenant's studies as the tenant sent them, without the prefix."""
        try:
            yield
        except ForecasterError as e:
            if not self._prefix:
                raise
            message = str(e).replace(f"'{self._prefix}", "'")
            raise type(e)(message) from None

    def _study_out(self, study: Study) -> Study:
        if not self._prefix:
            return study
        return replace(study, spec=replace(study.spec, name=self.shown(study.spec.name)))

    def _run_out(self, run: Run) -> Run:
        return replace(run, study=self.shown(run.study)) if self._prefix else run

    # -- studies ----------------------------------------------------------------------------

    def create_study(self, spec: StudySpec) -> tuple[Study, bool]:
        with self._as_sent():
            study, created = self.engine.create_study(replace(spec, name=self.stored(spec.name)))
        return self._study_out(study), created

    def get_study(self, name: str) -> Study:
        with self._as_sent():
            return self._study_out(self.engine.get_study(self.stored(name)))

    def list_studies(self, size: int, token: str = "") -> Page[Study]:
        mine = [s for s in self.engine.list_studies() if self._mine(s.name)]
        page = page_of(mine, lambda s: self.shown(s.name), size, token)
        return Page([self._study_out(s) for s in page.items], page.next_token)

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, study: str, spec: RunSpec) -> tuple[Run, bool]:
        with self._as_sent():
            run, created = self.engine.start_run(self.stored(study), spec)
        return self._run_out(run), created

    def get_run(self, study: str, run: str) -> Run:
        with self._as_sent():
            return self._run_out(self.engine.get_run(self.stored(study), run))

    def list_runs(
        self, study: str, state: RunState | None, size: int, token: str = ""
    ) -> Page[Run]:
        with self._as_sent():
            runs = self.engine.list_runs(self.stored(study), state)
        page = page_of(runs, lambda r: r.name, size, token)
        return Page([self._run_out(r) for r in page.items], page.next_token)

    def finish_run(self, study: str, run: str, state: RunState) -> Run:
        with self._as_sent():
            return self._run_out(self.engine.finish_run(self.stored(study), run, state))

    # -- ingest, decisions, forecasts -------------------------------------------------------

    def report(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> ReportResult:
        with self._as_sent():
            result = self.engine.report(self.stored(study), run, points, lr_schedule)
        return replace(result, run=self._run_out(result.run))

    def decision(self, study: str, run: str) -> Decision:
        with self._as_sent():
            return self.engine.decision(self.stored(study), run)

    def forecast(
        self,
        study: str,
        run: str,
        at_steps: Sequence[int] = (),
        quantile_levels: Sequence[float] = (),
        path_points: int = 0,
    ) -> tuple[ForecastSummary, ForecastSummary | None]:
        with self._as_sent():
            return self.engine.forecast(
                self.stored(study), run, at_steps, quantile_levels, path_points
            )

    # -- the dashboard's reads, and a person's stop ----------------------------------------

    @property
    def allow_manual_stop(self) -> bool:
        return self.engine.allow_manual_stop

    def all_studies(self) -> list[Study]:
        """Every study of the tenant, unpaged (the dashboard's list)."""
        return [self._study_out(s) for s in self.engine.list_studies() if self._mine(s.name)]

    def all_runs(self, study: str) -> list[Run]:
        with self._as_sent():
            return [self._run_out(r) for r in self.engine.list_runs(self.stored(study))]

    def incumbent(self, study: str) -> float | None:
        with self._as_sent():
            return self.engine.incumbent(self.stored(study))

    def stop_run(self, study: str, run: str, note: str = "") -> Decision:
        with self._as_sent():
            return self.engine.stop_run(self.stored(study), run, note)

    def points(
        self, study: str, run: str, after_step: int = -1, limit: int | None = None
    ) -> Points:
        with self._as_sent():
            return self.engine.points(self.stored(study), run, after_step, limit)

    def decision_history(
        self, study: str, run: str, start: int = 0, limit: int | None = None
    ) -> list[DecisionChange]:
        with self._as_sent():
            return self.engine.decision_history(self.stored(study), run, start, limit)

    def run_summary(self, study: str, run: str) -> RunSummary:
        with self._as_sent():
            summary = self.engine.run_summary(self.stored(study), run)
        return replace(summary, run=self._run_out(summary.run))

    def run_summaries(
        self, study: str, start: int = 0, limit: int | None = None, *, only: str | None = None
    ) -> list[RunSummary]:
        with self._as_sent():
            summaries = self.engine.run_summaries(self.stored(study), start, limit, only=only)
        return [replace(s, run=self._run_out(s.run)) for s in summaries]

    def rank_runs(self, study: str, limit: int | None = None) -> Ranking:
        with self._as_sent():
            return self.engine.rank_runs(self.stored(study), limit)

    def forecast_curve(
        self,
        curve: Curve,
        forecaster: str = "",
        at_steps: Sequence[int] = (),
        quantile_levels: Sequence[float] = (),
    ) -> ForecastSummary:
        """Stateless: reads and writes no study, so it is the same for every tenant."""
        return self.engine.forecast_curve(curve, forecaster, at_steps, quantile_levels)
