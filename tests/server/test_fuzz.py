"""benchmarks/fuzz.py, bounded: mutated messages to the real service never get UNKNOWN or
INTERNAL, and the service still answers SERVING afterwards (the full 100,000-message run
writes its figures into docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FUZZ = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"


def load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutated_messages_get_deliberate_statuses_only():
    fuzz = load_fuzz()
    result = fuzz.run(count=6_000, concurrency=16, seed_value=7, time_limit_s=240, show=False)
    codes = {code for _, code in result["counts"]}
    assert result["sent"] >= 6_000
    assert not codes & set(fuzz.FORBIDDEN), (result["bad"], result["errors"][:3])
    assert result["serving"]
    # The fuzzer reaches past validation: some calls succeed, some fail on purpose.
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED"} <= codes
