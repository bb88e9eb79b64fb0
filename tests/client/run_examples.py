"""Runs several docs examples in one interpreter, each as ``python -c`` would run it.

    python run_examples.py JOBS.json RESULTS.json

JOBS.json: [{"page", "code", "cwd"}, ...]. Each example runs in a namespace of its own named
__main__, in its own working directory, with os.environ as it was before it, and its own
stdout and stderr (its traceback included); its returncode is what `python -c` would exit
with. RESULTS.json ({page: {"returncode", "stdout", "stderr"}}) is rewritten after every
example, so an interpreter that dies keeps the results before it. The frameworks' imports
are paid once instead of once per example.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path


def run(code: str, cwd: str) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    environ, here = dict(os.environ), os.getcwd()
    returncode = 0
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                namespace = {"__name__": "__main__", "__builtins__": builtins}
                exec(compile(code, "<string>", "exec"), namespace)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    returncode = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    returncode = 1
            except BaseException:
                traceback.print_exc()
                returncode = 1
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
    return {"returncode": returncode, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(jobs_path: str, results_path: str) -> None:
    results: dict[str, dict[str, object]] = {}
    for job in json.loads(Path(jobs_path).read_text()):
        results[job["page"]] = run(job["code"], job["cwd"])
        Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
