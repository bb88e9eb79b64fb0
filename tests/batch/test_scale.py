"""A million runs through `forecaster batch` in flat memory (slow; bounded in time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from forecaster.corpus.synthetic import write_scale_corpus

REPO = Path(__file__).resolve().parents[2]
RUNS = 1_000_000
MEMORY_BOUND_GB = 2.0
TIME_BOUND_S = 2400


@pytest.mark.slow
def test_a_million_runs_stay_under_two_gigabytes(tmp_path):
    corpus = write_scale_corpus(tmp_path / "corpus" / "synthetic", RUNS, points=10).parent
    out = tmp_path / "results.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "trainer_plugins")])}
    command = [sys.executable, "-m", "forecaster.cli", "batch", "--corpus", str(corpus), "--out",
               str(out), "--model", "last_value", "--workers", "2", "--runs-per-job", "1000",
               "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    peak, deadline = 0, time.monotonic() + TIME_BOUND_S
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"a million runs took over {TIME_BOUND_S} s"
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert peak / 1e9 < MEMORY_BOUND_GB, f"peak RSS {peak / 1e9:.2f} GB"
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == RUNS and meta.num_row_groups > 100  # written as it went
