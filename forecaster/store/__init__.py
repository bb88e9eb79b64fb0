"""Durable state: the Store protocol and its implementations, opened by URL."""

from forecaster.store.base import (
    AppendResult,
    DecisionChange,
    Run,
    RunSpec,
    RunState,
    StopRequest,
    Store,
    StoredDecision,
    Study,
    StudySpec,
    curve_of,
    open_store,
)

__all__ = [
    "AppendResult",
    "DecisionChange",
    "Run",
    "RunSpec",
    "RunState",
    "StopRequest",
    "Store",
    "Study",
    "StoredDecision",
    "StudySpec",
    "curve_of",
    "open_store",
]
