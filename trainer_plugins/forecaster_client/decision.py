"""The service's stop/continue decision as the training loop sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from forecaster_client._proto import forecaster_pb2 as pb


def _name(wire_name: str, prefix: str) -> str:
    """ "REASON_TARGET_REACHED" -> "target_reached"."""
    return wire_name.removeprefix(prefix).lower()


@dataclass(frozen=True)
class Decision:
    """Keep training or stop, why, and the numbers behind it.

    ``action`` is "continue", "stop" or "pause" (stop for now, keeping a checkpoint: the
    study's ranking, ``StudyClient.rank()``, says when the run deserves to resume);
    ``reason`` one of "unknown" (no answer from the service yet), "warmup", "promising",
    "diverged", "target_unreachable", "unpromising", "converged", "target_reached",
    "budget_exhausted", "not_learning", "uncertain" (continue: the forecast is too wide to
    decide on), "manual" (a person stopped the run: StopRun, or the
    dashboard's button).
    """

    action: str = "continue"
    reason: str = "unknown"
    explanation: str = "no decision from the service yet"
    probabilities: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    expected_saved_steps: int = 0
    at_step: int = -1
    policy: str = ""

    @property
    def stop(self) -> bool:
        return self.action == "stop"

    @property
    def pause(self) -> bool:
        """Stop for now and keep the run's state: it may be resumed (the run stays running)."""
        return self.action == "pause"

    @property
    def final_state(self) -> str:
        """How a run that ends now is recorded: "stopped" when this decision cut it short,
        "finished" when it ran its course (its budget included)."""
        return "stopped" if self.stop and self.reason != "budget_exhausted" else "finished"

    @classmethod
    def from_proto(cls, d: pb.Decision) -> Decision:
        return cls(
            action=_name(pb.Action.Name(d.action), "ACTION_"),
            reason=_name(pb.Reason.Name(d.reason), "REASON_"),
            explanation=d.explanation,
            probabilities=MappingProxyType(dict(d.probabilities)),
            expected_saved_steps=d.expected_saved_steps,
            at_step=d.at_step,
            policy=d.policy,
        )

    def codes(self) -> tuple[int, int]:
        """(action, reason) as wire enum values: what rank 0 broadcasts to the other ranks."""
        action = pb.Action.Value(f"ACTION_{self.action.upper()}")
        reason = (
            pb.REASON_UNSPECIFIED
            if self.reason == "unknown"
            else pb.Reason.Value(f"REASON_{self.reason.upper()}")
        )
        return action, reason

    @classmethod
    def from_codes(cls, action: int, reason: int) -> Decision:
        """The decision a non-zero rank learns from rank 0's broadcast."""
        if action == pb.ACTION_UNSPECIFIED:
            return cls()
        return cls(
            action=_name(pb.Action.Name(action), "ACTION_"),
            reason="unknown"
            if reason == pb.REASON_UNSPECIFIED
            else _name(pb.Reason.Name(reason), "REASON_"),
            explanation="decided on rank 0; see its log for the explanation",
        )


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


@dataclass(frozen=True)
class RankedRun:
    """A running or paused run of a study, priced by what the rest of it is expected to buy
    (RankRuns): ``gain_rate`` is ``expected_gain`` (the expected improvement at the budget over
    ``reference``, "incumbent" or "own_best", relative to it) per fraction of the budget still
    to run. None where the service has no forecast of the run."""

    run: str
    paused: bool
    decision: Decision | None
    last_step: int
    remaining_steps: int
    expected_gain: float | None
    gain_rate: float | None
    forecast_final: float | None
    prob_beat_incumbent: float | None
    reference: str

    @classmethod
    def from_proto(cls, r: pb.RankedRun) -> RankedRun:
        return cls(
            run=r.run,
            paused=r.paused,
            decision=Decision.from_proto(r.decision) if r.HasField("decision") else None,
            last_step=int(r.last_step),
            remaining_steps=int(r.remaining_steps),
            expected_gain=_optional(r, "expected_gain"),
            gain_rate=_optional(r, "gain_rate"),
            forecast_final=_optional(r, "forecast_final"),
            prob_beat_incumbent=_optional(r, "prob_beat_incumbent"),
            reference=r.reference,
        )
