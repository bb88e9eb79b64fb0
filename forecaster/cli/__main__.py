"""`python -m forecaster.cli`: the same as the `forecaster` console script."""

from __future__ import annotations

import sys

from forecaster.cli import main

sys.exit(main())
