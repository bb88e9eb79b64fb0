"""Stopping policies: one file per policy behind the `StoppingPolicy` protocol, composable."""

from forecaster.policies.base import (
    DEFAULT,
    Action,
    Decision,
    Reason,
    RunView,
    StoppingPolicy,
    StudyContext,
    available,
    check_name,
    create,
)

__all__ = [
    "DEFAULT",
    "Action",
    "Decision",
    "Reason",
    "RunView",
    "StoppingPolicy",
    "StudyContext",
    "available",
    "check_name",
    "create",
]
