"""Durable state: the Store protocol and its implementations, opened by URL."""

from forecaster.store.base import (
    AppendResult,
    Run,
    RunSpec,
    RunState,
    Store,
    StoredDecision,
    Study,
    StudySpec,
    curve_of,
    open_store,
)

__all__ = [
    "AppendResult",
    "Run",
    "RunSpec",
    "RunState",
    "Store",
    "Study",
    "StoredDecision",
    "StudySpec",
    "curve_of",
    "open_store",
]
