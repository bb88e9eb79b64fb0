"""StudyClient: the service's studies, runs, forecasts and decisions as Python values.

    from forecaster_client import StudyClient

    with StudyClient("127.0.0.1:50051") as client:
        for run in client.runs("resnet-sweep"):
            print(run.name, run.state, run.decision.reason if run.decision else "-")
        fc = client.forecast("resnet-sweep", "lr=0.1")
        print(fc.median, fc.quantile(0.05), fc.quantile(0.95), fc.prob_reach_target)

Values are frozen dataclasses with numpy arrays, not protobuf messages; errors are the
service's gRPC errors (grpc.RpcError: its code() and details() say what to do). The asyncio
twin is AsyncStudyClient, with the same methods as coroutines. Needs numpy (the "api" extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc

try:
    import numpy as np
except ImportError as e:  # the Reporter needs no numpy; this API does
    raise ImportError(f'StudyClient needs numpy ({e}): pip install "forecaster-client[api]"') from e

from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client._proto import forecaster_pb2_grpc as pb_grpc
from forecaster_client.connection import Credentials
from forecaster_client.decision import Decision, RankedRun


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def _struct(s: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    out: dict[str, Any] = json_format.MessageToDict(s)
    return out


@dataclass(frozen=True)
class StudyInfo:
    name: str
    metric: str
    direction: str  # "minimize" or "maximize"
    max_step: int | None
    target: float | None
    policy: str
    forecaster: str
    n_runs: int
    created_at_s: float
    metric_kind: str = ""  # "" = inferred by the service from the metric name and direction
    metric_lower: float | None = None
    metric_upper: float | None = None

    @classmethod
    def from_proto(cls, s: pb.Study) -> StudyInfo:
        spec = s.spec
        return cls(
            name=spec.name,
            metric=spec.metric,
            direction=_name(pb.Direction, spec.direction, "DIRECTION_"),
            max_step=int(spec.max_step) or None,
            target=_optional(spec, "target"),
            policy=spec.policy.name or "forecast",
            forecaster=spec.forecaster or "auto",
            n_runs=int(s.n_runs),
            created_at_s=s.created_at_s,
            metric_kind=spec.metric_kind,
            metric_lower=_optional(spec, "metric_lower"),
            metric_upper=_optional(spec, "metric_upper"),
        )


@dataclass(frozen=True)
class Forecast:
    """A predictive distribution of the metric at some steps (the study's direction)."""

    steps: np.ndarray  # int64, ascending
    quantile_levels: np.ndarray  # ascending in (0, 1)
    quantiles: np.ndarray  # (len(steps), len(quantile_levels))
    mean: np.ndarray
    prob_reach_target: float | None
    steps_to_target: np.ndarray  # by quantile level; 0 = not reached in the horizon
    model: str
    model_version: int
    converged: bool
    notes: tuple[str, ...]
    observed_until_step: int

    @classmethod
    def from_proto(cls, f: pb.Forecast) -> Forecast:
        levels = np.asarray(f.quantile_levels, dtype=np.float64)
        quantiles = np.asarray([list(row.values) for row in f.quantiles], dtype=np.float64)
        return cls(
            steps=np.asarray(f.steps, dtype=np.int64),
            quantile_levels=levels,
            quantiles=quantiles.reshape(len(f.steps), len(levels)),
            mean=np.asarray(f.mean, dtype=np.float64),
            prob_reach_target=_optional(f, "prob_reach_target"),
            steps_to_target=np.asarray(f.steps_to_target, dtype=np.int64),
            model=f.model,
            model_version=int(f.model_version),
            converged=bool(f.converged),
            notes=tuple(f.notes),
            observed_until_step=int(f.observed_until_step),
        )

    def quantile(self, level: float) -> np.ndarray:
        """The quantile at `level` (one of quantile_levels) at each step."""
        hits = np.flatnonzero(np.isclose(self.quantile_levels, level))
        if not len(hits):
            raise ValueError(
                f"no quantile level {level} in this forecast ({self.quantile_levels.tolist()}); "
                "ask for it with forecast(..., quantile_levels=[...])"
            )
        return np.asarray(self.quantiles[:, hits[0]])

    @property
    def median(self) -> np.ndarray:
        return self.quantile(0.5)


@dataclass(frozen=True)
class DecisionChange:
    """One change of a run's decision: what it became, when, at which step."""

    decision: Decision
    decided_at_s: float
    forecast_final: float | None

    @property
    def at_step(self) -> int:
        return self.decision.at_step


@dataclass(frozen=True)
class RunInfo:
    """A run with what the service thinks of it now."""

    study: str
    name: str
    state: str  # "running", "finished", "stopped", "failed"
    n_points: int
    last_step: int
    last_value: float
    best_value: float
    max_step: int | None
    config: Mapping[str, Any]
    created_at_s: float
    finished_at_s: float | None
    decision: Decision | None
    forecast: Forecast | None  # at the budget, for a running run
    prob_beat_incumbent: float | None
    incumbent: float | None
    saved_steps: int

    @classmethod
    def from_summary(cls, s: pb.RunSummary) -> RunInfo:
        r = s.run
        return cls(
            study=r.study,
            name=r.spec.name,
            state=_name(pb.RunState, r.state, "RUN_STATE_"),
            n_points=int(r.n_points),
            last_step=int(r.last_step),
            last_value=float(r.last_value),
            best_value=float(r.best_value),
            max_step=int(r.spec.max_step) or None,
            config=MappingProxyType(_struct(r.spec.config)),
            created_at_s=r.created_at_s,
            finished_at_s=r.finished_at_s or None,
            decision=Decision.from_proto(s.decision) if s.HasField("decision") else None,
            forecast=Forecast.from_proto(s.forecast) if s.HasField("forecast") else None,
            prob_beat_incumbent=_optional(s, "prob_beat_incumbent"),
            incumbent=_optional(s, "incumbent"),
            saved_steps=int(s.saved_steps),
        )


@dataclass(frozen=True)
class Points:
    steps: np.ndarray  # int64
    values: np.ndarray  # float64, NaN/inf as stored
    lr: np.ndarray  # NaN where not reported


def _points(pages: Sequence[pb.Point]) -> Points:
    return Points(
        steps=np.asarray([p.step for p in pages], dtype=np.int64),
        values=np.asarray([p.value for p in pages], dtype=np.float64),
        lr=np.asarray([p.lr if p.HasField("lr") else math.nan for p in pages], dtype=np.float64),
    )


def _channel(address: str, tls: Credentials, aio: bool) -> Any:
    module = grpc.aio if aio else grpc
    if tls:
        creds = tls if isinstance(tls, grpc.ChannelCredentials) else grpc.ssl_channel_credentials()
        return module.secure_channel(address, creds)
    return module.insecure_channel(address)


def _forecast_request(
    study: str, run: str, at_steps: Sequence[int] | None, levels: Sequence[float] | None
) -> pb.GetForecastRequest:
    return pb.GetForecastRequest(
        study=study,
        run=run,
        at_steps=[int(s) for s in (at_steps or ())],
        quantile_levels=[float(q) for q in (levels or ())],
    )


class StudyClient:
    """Reads studies, runs, forecasts and decisions from a forecaster service; stops runs.

    Args:
        address: "host:port" of the service.
        token: bearer token when the service requires one.
        tls: True for TLS with the system roots, or your grpc.ChannelCredentials.
        timeout_s: deadline of each call.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = _channel(address, tls, aio=False)
        self._stub = pb_grpc.CurveServiceStub(self._channel)

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self.timeout_s, metadata=self._metadata)

    def studies(self) -> list[StudyInfo]:
        out: list[StudyInfo] = []
        token = ""
        while True:  # every page: the service pages listings (page_size, next_page_token)
            reply = self._call(self._stub.ListStudies, pb.ListStudiesRequest(page_token=token))
            out.extend(StudyInfo.from_proto(s) for s in reply.studies)
            token = reply.next_page_token
            if not token:
                return out

    def study(self, name: str) -> StudyInfo:
        reply = self._call(self._stub.GetStudy, pb.GetStudyRequest(name=name))
        return StudyInfo.from_proto(reply.study)

    def runs(self, study: str) -> list[RunInfo]:
        """Every run of the study, with its decision and (running) forecast at the budget."""
        out: list[RunInfo] = []
        token = ""
        while True:
            request = pb.ListRunSummariesRequest(study=study, page_token=token)
            reply = self._call(self._stub.ListRunSummaries, request)
            out.extend(RunInfo.from_summary(s) for s in reply.runs)
            token = reply.next_page_token
            if not token:
                return out

    def run(self, study: str, run: str) -> RunInfo:
        request = pb.GetRunSummaryRequest(study=study, run=run)
        return RunInfo.from_summary(self._call(self._stub.GetRunSummary, request).summary)

    def forecast(
        self,
        study: str,
        run: str,
        at_steps: Sequence[int] | None = None,
        quantile_levels: Sequence[float] | None = None,
    ) -> Forecast:
        """The run's predictive distribution at at_steps (default: its budget)."""
        request = _forecast_request(study, run, at_steps, quantile_levels)
        return Forecast.from_proto(self._call(self._stub.GetForecast, request).forecast)

    def decision(self, study: str, run: str) -> Decision:
        request = pb.GetDecisionRequest(study=study, run=run)
        return Decision.from_proto(self._call(self._stub.GetDecision, request).decision)

    def rank(self, study: str, limit: int = 0) -> list[RankedRun]:
        """The study's running and paused runs, best first: the expected gain of the rest of
        each run per fraction of its budget still to run ("which run deserves the next GPU
        hour"). limit 0: the service's page size."""
        request = pb.RankRunsRequest(study=study, limit=limit)
        return [RankedRun.from_proto(r) for r in self._call(self._stub.RankRuns, request).runs]

    def history(self, study: str, run: str) -> list[DecisionChange]:
        """Every change of the run's decision, oldest first."""
        return list(self._history(study, run))

    def _history(self, study: str, run: str) -> Iterator[DecisionChange]:
        token = ""
        while True:
            request = pb.ListDecisionHistoryRequest(study=study, run=run, page_token=token)
            reply = self._call(self._stub.ListDecisionHistory, request)
            for c in reply.changes:
                yield DecisionChange(
                    Decision.from_proto(c.decision), c.decided_at_s, _optional(c, "forecast_final")
                )
            token = reply.next_page_token
            if not token:
                return

    def points(self, study: str, run: str) -> Points:
        """The run's stored points, every page of them."""
        got: list[pb.Point] = []
        token = ""
        while True:
            request = pb.ListPointsRequest(study=study, run=run, page_token=token)
            reply = self._call(self._stub.ListPoints, request)
            got.extend(reply.points)
            token = reply.next_page_token
            if not token:
                return _points(got)

    def stop(self, study: str, run: str, note: str = "") -> Decision:
        """Asks the run to stop (the service must allow manual stops): its plugin's
        should_stop() answers True, reason "manual", at its next report."""
        request = pb.StopRunRequest(study=study, run=run, note=note)
        return Decision.from_proto(self._call(self._stub.StopRun, request).decision)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StudyClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class AsyncStudyClient:
    """StudyClient's asyncio twin: the same methods, as coroutines, over grpc.aio."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = _channel(address, tls, aio=True)
        self._stub = pb_grpc.CurveServiceStub(self._channel)

    async def _call(self, method: Any, request: Any) -> Any:
        return await method(request, timeout=self.timeout_s, metadata=self._metadata)

    async def studies(self) -> list[StudyInfo]:
        out: list[StudyInfo] = []
        token = ""
        while True:
            request = pb.ListStudiesRequest(page_token=token)
            reply = await self._call(self._stub.ListStudies, request)
            out.extend(StudyInfo.from_proto(s) for s in reply.studies)
            token = reply.next_page_token
            if not token:
                return out

    async def runs(self, study: str) -> list[RunInfo]:
        out: list[RunInfo] = []
        token = ""
        while True:
            request = pb.ListRunSummariesRequest(study=study, page_token=token)
            reply = await self._call(self._stub.ListRunSummaries, request)
            out.extend(RunInfo.from_summary(s) for s in reply.runs)
            token = reply.next_page_token
            if not token:
                return out

    async def forecast(
        self,
        study: str,
        run: str,
        at_steps: Sequence[int] | None = None,
        quantile_levels: Sequence[float] | None = None,
    ) -> Forecast:
        request = _forecast_request(study, run, at_steps, quantile_levels)
        return Forecast.from_proto((await self._call(self._stub.GetForecast, request)).forecast)

    async def decision(self, study: str, run: str) -> Decision:
        request = pb.GetDecisionRequest(study=study, run=run)
        return Decision.from_proto((await self._call(self._stub.GetDecision, request)).decision)

    async def rank(self, study: str, limit: int = 0) -> list[RankedRun]:
        request = pb.RankRunsRequest(study=study, limit=limit)
        reply = await self._call(self._stub.RankRuns, request)
        return [RankedRun.from_proto(r) for r in reply.runs]

    async def history(self, study: str, run: str) -> list[DecisionChange]:
        out: list[DecisionChange] = []
        token = ""
        while True:
            request = pb.ListDecisionHistoryRequest(study=study, run=run, page_token=token)
            reply = await self._call(self._stub.ListDecisionHistory, request)
            out.extend(
                DecisionChange(
                    Decision.from_proto(c.decision), c.decided_at_s, _optional(c, "forecast_final")
                )
                for c in reply.changes
            )
            token = reply.next_page_token
            if not token:
                return out

    async def stop(self, study: str, run: str, note: str = "") -> Decision:
        request = pb.StopRunRequest(study=study, run=run, note=note)
        return Decision.from_proto((await self._call(self._stub.StopRun, request)).decision)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncStudyClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()
