"""Offline batch forecasting: every run of a corpus or a points file forecast and judged, as
the service would, into one Parquet file of results (`forecaster batch`).

`inputs` (what is read, lazily), `study` (one study's runs through `judging`), `engines`
(local processes or Ray, results in job order), `output` (row groups, resumable), `run`
(the whole batch).
"""

from forecaster.batch.engines import ENGINES, LocalEngine, RayEngine
from forecaster.batch.inputs import CorpusInput, PointsInput, points_input
from forecaster.batch.run import BatchSummary, read_settings, run_batch
from forecaster.batch.study import JudgeSpec

__all__ = [
    "ENGINES",
    "BatchSummary",
    "CorpusInput",
    "JudgeSpec",
    "LocalEngine",
    "PointsInput",
    "RayEngine",
    "points_input",
    "read_settings",
    "run_batch",
]
