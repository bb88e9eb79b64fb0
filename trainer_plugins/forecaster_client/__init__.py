"""forecaster_client: report learning curves to a forecaster service from inside training jobs.

    from forecaster_client import Reporter

    with Reporter("127.0.0.1:50051", study="sweep", run="lr=3e-4", max_step=10_000) as r:
        for step in range(10_000):
            loss = train_step()
            r.report(step, loss, lr=optimizer.param_groups[0]["lr"])
            if r.should_stop():
                print(r.decision.reason, r.decision.explanation)
                break

Framework integrations live in their own modules and import their framework only there:
forecaster_client.lightning, .huggingface, .keras, .pytorch, .optuna, .ray_tune.
StudyClient (and AsyncStudyClient) read the service back as values (numpy arrays): they are
imported on first use, so a training job that only reports never imports numpy for them.
"""

from typing import Any

from forecaster_client.decision import Decision, RankedRun
from forecaster_client.forecast import FinalForecast
from forecaster_client.reporter import Reporter

__all__ = [
    "AsyncStudyClient",
    "Decision",
    "FinalForecast",
    "RankedRun",
    "Reporter",
    "StudyClient",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("StudyClient", "AsyncStudyClient"):
        from forecaster_client import study

        return getattr(study, name)
    raise AttributeError(f"module 'forecaster_client' has no attribute {name!r}")
