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
from forecaster.errors import ForecasterError, InvalidArgumentError
from forecaster.server import convert
from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from forecaster.server.errors import status_code
from forecaster.server.logs import request_id

log = logging.getLogger("forecaster.server")
T = TypeVar("T")


class CurveServicer(pb_grpc.CurveServiceServicer):
    """The public API of DESIGN.md over gRPC.

    Args:
        engine: the application.
        executor: where engine work runs, so a slow fit or a disk write never blocks the
            event loop (and the health check).
        max_points_per_batch: the limit a batch is checked against (RESOURCE_EXHAUSTED).
        reads: where the quick reads (GetDecision, GetRun) run, so that they never queue
            behind reports and fits (default: executor).
    """

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        max_points_per_batch: int,
        reads: Executor | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.reads = reads or executor
        self.max_points = max_points_per_batch

    async def _run(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[..., T],
        *args: Any,
        pool: Executor | None = None,
    ) -> T:
        """Runs fn(*args) in the executor (with this RPC's request id); errors become statuses.

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
            return await loop.run_in_executor(pool or self.executor, ctx.run, guarded, *args)
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

    async def CreateStudy(
        self, request: pb.CreateStudyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStudyResponse:
        def work() -> pb.CreateStudyResponse:
            study, created = self.engine.create_study(convert.study_spec_from_proto(request.study))
            return pb.CreateStudyResponse(study=convert.study_to_proto(study), created=created)

        return await self._run(context, work)

    async def StartRun(
        self, request: pb.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartRunResponse:
        def work() -> pb.StartRunResponse:
            run, created = self.engine.start_run(
                request.study, convert.run_spec_from_proto(request.run)
            )
            return pb.StartRunResponse(run=convert.run_to_proto(run), created=created)

        return await self._run(context, work)

    def _report(self, request: pb.ReportMetricsRequest) -> pb.ReportMetricsResponse:
        where = f"ReportMetrics (study {request.study!r}, run {request.run!r})"
        points = convert.points_from_proto(request.points, self.max_points, where)
        schedule = convert.schedule_from_proto(request.lr_schedule, request.HasField("lr_schedule"))
        result = self.engine.report(request.study, request.run, points, schedule)
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
        last: dict[tuple[str, str], tuple[int, int]] = {}
        async for request in request_iterator:
            response = await self._run(context, self._report, request)
            d = response.decision
            key = (request.study, request.run)
            if last.get(key) != (d.action, d.reason):
                last[key] = (d.action, d.reason)
                yield pb.StreamMetricsResponse(
                    study=request.study, run=request.run, decision=d, last_step=response.last_step
                )

    async def GetForecast(
        self, request: pb.GetForecastRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetForecastResponse:
        def work() -> pb.GetForecastResponse:
            summary, path = self.engine.forecast(
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
        def work() -> pb.GetDecisionResponse:
            decision = self.engine.decision(request.study, request.run)
            return pb.GetDecisionResponse(decision=convert.decision_to_proto(decision))

        return await self._run(context, work, pool=self.reads)

    async def FinishRun(
        self, request: pb.FinishRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.FinishRunResponse:
        def work() -> pb.FinishRunResponse:
            state = convert.state_from_proto(request.state)
            if state is None:
                raise InvalidArgumentError(
                    "FinishRun: state is required: RUN_STATE_FINISHED, RUN_STATE_STOPPED or "
                    "RUN_STATE_FAILED."
                )
            run = self.engine.finish_run(request.study, request.run, state)
            return pb.FinishRunResponse(run=convert.run_to_proto(run))

        return await self._run(context, work)

    async def GetRun(
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        def work() -> pb.GetRunResponse:
            run = self.engine.get_run(request.study, request.run)
            return pb.GetRunResponse(run=convert.run_to_proto(run))

        return await self._run(context, work, pool=self.reads)

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        def work() -> pb.ListRunsResponse:
            runs = self.engine.list_runs(request.study, convert.state_from_proto(request.state))
            return pb.ListRunsResponse(runs=[convert.run_to_proto(r) for r in runs])

        return await self._run(context, work)

    async def GetStudy(
        self, request: pb.GetStudyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStudyResponse:
        def work() -> pb.GetStudyResponse:
            return pb.GetStudyResponse(
                study=convert.study_to_proto(self.engine.get_study(request.name))
            )

        return await self._run(context, work)

    async def ListStudies(
        self, request: pb.ListStudiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStudiesResponse:
        def work() -> pb.ListStudiesResponse:
            return pb.ListStudiesResponse(
                studies=[convert.study_to_proto(s) for s in self.engine.list_studies()]
            )

        return await self._run(context, work)

    async def ForecastCurve(
        self, request: pb.ForecastCurveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForecastCurveResponse:
        def work() -> pb.ForecastCurveResponse:
            curve = convert.curve_from_request(request, self.max_points)
            summary = self.engine.forecast_curve(
                curve, request.forecaster, list(request.at_steps), list(request.quantile_levels)
            )
            return pb.ForecastCurveResponse(forecast=convert.forecast_to_proto(summary))

        return await self._run(context, work)

    async def StopRun(
        self, request: pb.StopRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopRunResponse:
        def work() -> pb.StopRunResponse:
            decision = self.engine.stop_run(request.study, request.run, request.note)
            return pb.StopRunResponse(decision=convert.decision_to_proto(decision))

        return await self._run(context, work)

    async def ListPoints(
        self, request: pb.ListPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPointsResponse:
        def work() -> pb.ListPointsResponse:
            position, size = convert.page_of(
                request.page_token, request.page_size, 1000, 10_000, "ListPoints"
            )
            if not request.page_token:
                position = -1  # a points token is the last step of the page before
            page = self.engine.points(request.study, request.run, position, size + 1)
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
        def work() -> pb.ListDecisionHistoryResponse:
            start, size = convert.page_of(
                request.page_token, request.page_size, 100, 1000, "ListDecisionHistory"
            )
            changes = self.engine.decision_history(request.study, request.run, start, size + 1)
            more = len(changes) > size
            return pb.ListDecisionHistoryResponse(
                changes=[convert.decision_change_to_proto(c) for c in changes[:size]],
                next_page_token=str(start + size) if more else "",
            )

        return await self._run(context, work)

    async def ListRunSummaries(
        self, request: pb.ListRunSummariesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunSummariesResponse:
        def work() -> pb.ListRunSummariesResponse:
            start, size = convert.page_of(
                request.page_token, request.page_size, 100, 1000, "ListRunSummaries"
            )
            summaries = self.engine.run_summaries(request.study, max(start, 0), size + 1)
            more = len(summaries) > size
            return pb.ListRunSummariesResponse(
                runs=[convert.run_summary_to_proto(s) for s in summaries[:size]],
                next_page_token=str(max(start, 0) + size) if more else "",
            )

        return await self._run(context, work)

    async def GetRunSummary(
        self, request: pb.GetRunSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunSummaryResponse:
        def work() -> pb.GetRunSummaryResponse:
            summary = self.engine.run_summary(request.study, request.run)
            return pb.GetRunSummaryResponse(summary=convert.run_summary_to_proto(summary))

        return await self._run(context, work)


class _DeadlinePassed(Exception):
    """The RPC's deadline passed before its work started."""


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")
