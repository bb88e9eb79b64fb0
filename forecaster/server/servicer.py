"""CurveService: decode -> engine (off the event loop) -> encode. Nothing else lives here."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np

from forecaster.engine import Engine
from forecaster.errors import (
    ForecasterError,
    InvalidArgumentError,
    StartingError,
)
from forecaster.limits import Limits
from forecaster.server import convert
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.auth import Authenticator
from forecaster.server.errors import status_code
from forecaster.server.interceptors import authorization_of, metadata_value
from forecaster.server.logs import request_id
from forecaster.server.metrics import ServiceMetrics
from forecaster.tenancy import TenantEngine, encode_token

log = logging.getLogger("forecaster.server")
T = TypeVar("T")
M = TypeVar("M", pb.Run, pb.Study)
# A status message longer than this is cut: clients refuse trailers beyond 8 KiB.
_MAX_MESSAGE_CHARS = 1_000


class CurveServicer(pb_grpc.CurveServiceServicer):
    """The public API of DESIGN.md over gRPC.

    Args:
        engine: the application; None while the service is still loading it (every call is
            UNAVAILABLE until `attach`).
        executor: where engine work runs, so a slow fit or a disk write never blocks the
            event loop (and the health check).
        max_points_per_batch: the limit a batch is checked against (RESOURCE_EXHAUSTED).
        reads: where the quick reads (GetDecision, GetRun) run, so that they never queue
            behind reports and fits (default: executor).
        auth: resolves each call's token to its tenant; each call sees only its studies.
        limits: what one request may carry.
        metrics: points stored and decisions counted there when given.
        stream_idle_timeout_s: a StreamMetrics that sends nothing for this long is closed.
        max_concurrent_streams: StreamMetrics open at once; more are RESOURCE_EXHAUSTED.
        max_message_bytes: a listing page stops short of half this, whatever its page size.
    """

    def __init__(
        self,
        engine: Engine | None,
        executor: Executor,
        max_points_per_batch: int,
        reads: Executor | None = None,
        *,
        auth: Authenticator | None = None,
        limits: Limits | None = None,
        metrics: ServiceMetrics | None = None,
        stream_idle_timeout_s: float = 300.0,
        max_concurrent_streams: int = 1_000,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.reads = reads or executor
        self.max_points = max_points_per_batch
        self.auth = auth or Authenticator({})
        self.limits = limits or Limits()
        self.metrics = metrics
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.max_concurrent_streams = max_concurrent_streams
        self.page_budget_bytes = max_message_bytes // 2
        self.open_streams = 0

    def attach(self, engine: Engine) -> None:
        """The engine is loaded: calls are served from now on."""
        self.engine = engine

    def _scope(self, context: grpc.aio.ServicerContext) -> TenantEngine:
        """The engine as the caller's tenant sees it (checked on the event loop: cheap)."""
        if self.engine is None:
            raise StartingError(
                "the service is starting (loading its learned models); retry in a few seconds."
            )
        return TenantEngine(self.engine, self.auth.require(authorization_of(context)))

    async def _run(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[..., T],
        *args: Any,
        pool: Executor | None = None,
        scope: TenantEngine | None = None,
    ) -> T:
        """Runs fn(scope, *args) in the executor (with this RPC's request id), scope being the
        engine as the caller's tenant sees it (resolved here unless given: a stream resolves it
        once for all its messages); errors become statuses.

        Work whose deadline passed while it waited for a worker is dropped before it touches
        the store: its client has given up, so storing it would only delay the others.
        """
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining

        def guarded(*a: Any) -> T:
            if deadline is not None and time.monotonic() >= deadline:
                raise _DeadlinePassed
            return fn(*a)

        try:
            scope = scope if scope is not None else self._scope(context)
            return await loop.run_in_executor(pool or self.executor, ctx.run, guarded, scope, *args)
        except _DeadlinePassed:
            await _abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the deadline passed before the service could start on the request; nothing "
                "was done. Retry with a longer deadline.",
            )
        except ForecasterError as e:
            await _abort(context, status_code(e), str(e))
        except Exception:
            log.exception("internal error")
            await _abort(
                context,
                grpc.StatusCode.INTERNAL,
                f"internal error (request id {request_id.get()}); see the service log.",
            )

    def _names(self, study: str, run: str) -> None:
        self.limits.name("study", study)
        self.limits.name("run", run)

    def _within_budget(
        self, items: list[M], next_token: str, key: Callable[[M], str]
    ) -> tuple[list[M], str]:
        """A page cut short where its encoded size passes the budget (a few huge entries
        stored before the limits existed must not make the listing fail for everyone)."""
        total = 0
        for i, item in enumerate(items):
            total += item.ByteSize()
            if total > self.page_budget_bytes and i > 0:
                return items[:i], encode_token(key(items[i - 1]))
        return items, next_token

    async def CreateStudy(
        self, request: pb.CreateStudyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStudyResponse:
        def work(scope: TenantEngine) -> pb.CreateStudyResponse:
            spec = convert.study_spec_from_proto(request.study, self.limits)
            study, created = scope.create_study(spec)
            return pb.CreateStudyResponse(study=convert.study_to_proto(study), created=created)

        return await self._run(context, work)

    async def StartRun(
        self, request: pb.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartRunResponse:
        def work(scope: TenantEngine) -> pb.StartRunResponse:
            study = self.limits.name("study", request.study)
            run, created = scope.start_run(
                study, convert.run_spec_from_proto(request.run, self.limits)
            )
            return pb.StartRunResponse(run=convert.run_to_proto(run), created=created)

        return await self._run(context, work)

    def _report(
        self, scope: TenantEngine, request: pb.ReportMetricsRequest
    ) -> pb.ReportMetricsResponse:
        self.limits.name("study", request.study)
        self.limits.name("run", request.run)
        where = f"ReportMetrics (study {request.study!r}, run {request.run!r})"
        points = convert.points_from_proto(request.points, self.max_points, where, self.limits)
        schedule = convert.schedule_from_proto(
            request.lr_schedule, request.HasField("lr_schedule"), self.limits
        )
        result = scope.report(request.study, request.run, points, schedule)
        if self.metrics is not None:
            self.metrics.points.inc(result.n_stored)
            d = result.decision
            self.metrics.decisions.labels(action=d.action.name, reason=d.reason.name).inc()
        return pb.ReportMetricsResponse(
            decision=convert.decision_to_proto(result.decision),
            n_stored=result.n_stored,
            last_step=result.run.last_step,
        )

    async def ReportMetrics(
        self, request: pb.ReportMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportMetricsResponse:
        return await self._run(context, self._report, request)

    async def StreamMetrics(
        self,
        request_iterator: AsyncIterator[pb.ReportMetricsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        if self.open_streams >= self.max_concurrent_streams:
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.open_streams} StreamMetrics streams are open, the limit "
                "max_concurrent_streams: retry later, or report with ReportMetrics.",
            )
        self.open_streams += 1
        if self.metrics is not None:
            self.metrics.streams.inc()
        try:
            last: dict[tuple[str, str], tuple[int, int]] = {}
            every = _acks_every(context)
            scope: TenantEngine | None = None  # the caller's, resolved at its first message
            requests = aiter(request_iterator)
            while True:
                try:
                    async with asyncio.timeout(self.stream_idle_timeout_s):
                        request = await anext(requests)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await _abort(
                        context,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"StreamMetrics sent nothing for {self.stream_idle_timeout_s:g} s (the "
                        "setting stream_idle_timeout_s): closed; open a new stream to go on.",
                    )
                if scope is None:
                    try:
                        scope = self._scope(context)
                    except ForecasterError as e:
                        await _abort(context, status_code(e), str(e))
                response = await self._run(context, self._report, request, scope=scope)
                d = response.decision
                key = (request.study, request.run)
                if every or last.get(key) != (d.action, d.reason):
                    last[key] = (d.action, d.reason)
                    yield pb.StreamMetricsResponse(
                        study=request.study,
                        run=request.run,
                        decision=d,
                        last_step=response.last_step,
                    )
        finally:
            self.open_streams -= 1
            if self.metrics is not None:
                self.metrics.streams.dec()

    async def GetForecast(
        self, request: pb.GetForecastRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetForecastResponse:
        def work(scope: TenantEngine) -> pb.GetForecastResponse:
            self._names(request.study, request.run)
            convert.forecast_steps(request.at_steps, request.quantile_levels, self.limits)
            summary, path = scope.forecast(
                request.study,
                request.run,
                list(request.at_steps),
                list(request.quantile_levels),
                request.path_points,
            )
            return pb.GetForecastResponse(
                forecast=convert.forecast_to_proto(summary),
                path=None if path is None else convert.forecast_to_proto(path),
            )

        return await self._run(context, work)

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDecisionResponse:
        def work(scope: TenantEngine) -> pb.GetDecisionResponse:
            self._names(request.study, request.run)
            decision = scope.decision(request.study, request.run)
            return pb.GetDecisionResponse(decision=convert.decision_to_proto(decision))

        return await self._run(context, work, pool=self.reads)

    async def FinishRun(
        self, request: pb.FinishRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.FinishRunResponse:
        def work(scope: TenantEngine) -> pb.FinishRunResponse:
            self._names(request.study, request.run)
            state = convert.state_from_proto(request.state)
            if state is None:
                raise InvalidArgumentError(
                    "FinishRun: state is required: RUN_STATE_FINISHED, RUN_STATE_STOPPED or "
                    "RUN_STATE_FAILED."
                )
            run = scope.finish_run(request.study, request.run, state)
            return pb.FinishRunResponse(run=convert.run_to_proto(run))

        return await self._run(context, work)

    async def GetRun(
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        def work(scope: TenantEngine) -> pb.GetRunResponse:
            self._names(request.study, request.run)
            run = scope.get_run(request.study, request.run)
            return pb.GetRunResponse(run=convert.run_to_proto(run))

        return await self._run(context, work, pool=self.reads)

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        def work(scope: TenantEngine) -> pb.ListRunsResponse:
            self.limits.name("study", request.study)
            size = self.limits.page("page_size", request.page_size)
            page = scope.list_runs(
                request.study, convert.state_from_proto(request.state), size, request.page_token
            )
            runs, token = self._within_budget(
                [convert.run_to_proto(r) for r in page.items],
                page.next_token,
                lambda r: r.spec.name,
            )
            return pb.ListRunsResponse(runs=runs, next_page_token=token)

        return await self._run(context, work)

    async def GetStudy(
        self, request: pb.GetStudyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStudyResponse:
        def work(scope: TenantEngine) -> pb.GetStudyResponse:
            self.limits.name("name", request.name)
            return pb.GetStudyResponse(study=convert.study_to_proto(scope.get_study(request.name)))

        return await self._run(context, work)

    async def ListStudies(
        self, request: pb.ListStudiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStudiesResponse:
        def work(scope: TenantEngine) -> pb.ListStudiesResponse:
            size = self.limits.page("page_size", request.page_size)
            page = scope.list_studies(size, request.page_token)
            studies, token = self._within_budget(
                [convert.study_to_proto(s) for s in page.items],
                page.next_token,
                lambda s: s.spec.name,
            )
            return pb.ListStudiesResponse(studies=studies, next_page_token=token)

        return await self._run(context, work)

    async def ForecastCurve(
        self, request: pb.ForecastCurveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForecastCurveResponse:
        def work(scope: TenantEngine) -> pb.ForecastCurveResponse:
            self.limits.keyword("forecaster", request.forecaster)
            convert.forecast_steps(request.at_steps, request.quantile_levels, self.limits)
            curve = convert.curve_from_request(request, self.max_points, self.limits)
            summary = scope.forecast_curve(
                curve, request.forecaster, list(request.at_steps), list(request.quantile_levels)
            )
            return pb.ForecastCurveResponse(forecast=convert.forecast_to_proto(summary))

        return await self._run(context, work)

    async def StopRun(
        self, request: pb.StopRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopRunResponse:
        def work(scope: TenantEngine) -> pb.StopRunResponse:
            decision = scope.stop_run(request.study, request.run, request.note)
            return pb.StopRunResponse(decision=convert.decision_to_proto(decision))

        return await self._run(context, work)

    async def ListPoints(
        self, request: pb.ListPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPointsResponse:
        def work(scope: TenantEngine) -> pb.ListPointsResponse:
            position, size = convert.page_of(
                request.page_token, request.page_size, 1000, 10_000, "ListPoints"
            )
            if not request.page_token:
                position = -1  # a points token is the last step of the page before
            page = scope.points(request.study, request.run, position, size + 1)
            more = len(page) > size
            shown = page.take(np.arange(len(page)) < size) if more else page
            return pb.ListPointsResponse(
                points=convert.points_to_proto(shown),
                next_page_token=str(int(shown.steps[-1])) if more else "",
            )

        return await self._run(context, work)

    async def ListDecisionHistory(
        self, request: pb.ListDecisionHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDecisionHistoryResponse:
        def work(scope: TenantEngine) -> pb.ListDecisionHistoryResponse:
            start, size = convert.page_of(
                request.page_token, request.page_size, 100, 1000, "ListDecisionHistory"
            )
            changes = scope.decision_history(request.study, request.run, start, size + 1)
            more = len(changes) > size
            return pb.ListDecisionHistoryResponse(
                changes=[convert.decision_change_to_proto(c) for c in changes[:size]],
                next_page_token=str(start + size) if more else "",
            )

        return await self._run(context, work)

    async def ListRunSummaries(
        self, request: pb.ListRunSummariesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunSummariesResponse:
        def work(scope: TenantEngine) -> pb.ListRunSummariesResponse:
            start, size = convert.page_of(
                request.page_token, request.page_size, 100, 1000, "ListRunSummaries"
            )
            summaries = scope.run_summaries(request.study, max(start, 0), size + 1)
            more = len(summaries) > size
            return pb.ListRunSummariesResponse(
                runs=[convert.run_summary_to_proto(s) for s in summaries[:size]],
                next_page_token=str(max(start, 0) + size) if more else "",
            )

        return await self._run(context, work)

    async def GetRunSummary(
        self, request: pb.GetRunSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunSummaryResponse:
        def work(scope: TenantEngine) -> pb.GetRunSummaryResponse:
            summary = scope.run_summary(request.study, request.run)
            return pb.GetRunSummaryResponse(summary=convert.run_summary_to_proto(summary))

        return await self._run(context, work)

    async def RankRuns(
        self, request: pb.RankRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankRunsResponse:
        def work(scope: TenantEngine) -> pb.RankRunsResponse:
            self.limits.name("study", request.study)
            limit = self.limits.page("limit", request.limit)
            return convert.ranking_to_proto(scope.rank_runs(request.study, limit))

        return await self._run(context, work)


# Request metadata of a StreamMetrics that wants every batch answered once it is stored (an
# acknowledgement: a trainer can then wait for it before sending the next), not only changes.
ACK_EVERY_BATCH = ("forecaster-acks", "every")


def _acks_every(context: grpc.aio.ServicerContext) -> bool:
    return metadata_value(context, ACK_EVERY_BATCH[0]) == ACK_EVERY_BATCH[1]


class _DeadlinePassed(Exception):
    """The RPC's deadline passed before its work started."""


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 20] + f"... ({len(message)} chars)"
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")
