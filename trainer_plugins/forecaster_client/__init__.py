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
"""

from forecaster_client.decision import Decision
from forecaster_client.reporter import Reporter

__all__ = ["Decision", "Reporter"]
__version__ = "0.1.0"
