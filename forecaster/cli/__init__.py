"""The command line: `forecaster serve | demo | health | studies | runs | why | eval | replay |
train | import | law`.

One module per command (`serve`, `demo`, `health`, `studies`, `runs`, `why`, `evaluate` for
eval, `replay`, `train`, `import_logs` for import, `law`; what studies, runs and why share is
in `remote.py`), each with `add_parser(commands)` declaring its flags and
`run(args)`; the flags that eval, replay and train share are declared once, in `options.py`.
A command imports what it needs (torch, lightgbm, grpc, the corpus) inside `run`, so `--help`
and `serve` on defaults stay light.
"""

from __future__ import annotations

from forecaster.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
