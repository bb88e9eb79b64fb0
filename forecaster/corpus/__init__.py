"""Reading corpora of logged runs in the schema of datasets/SCHEMA.md."""

from forecaster.corpus.reader import REQUIRED_POINT_COLUMNS, REQUIRED_RUN_COLUMNS, Source, sources

__all__ = ["REQUIRED_POINT_COLUMNS", "REQUIRED_RUN_COLUMNS", "Source", "sources"]
