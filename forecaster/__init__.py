"""forecaster: forecasts learning curves of running training jobs and decides stop/continue.

The public names live in their modules (`forecaster.curves`, `forecaster.models`,
`forecaster.policies`, `forecaster.store`, `forecaster.engine`); importing this package does no
work and imports no torch, lightgbm, grpc or database driver.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
