"""A bank a batch's driver hands on is loaded lazily, and a worker that receives one with every
job loads it once (again only when an artifact changes)."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

from forecaster.models.artifacts import DEFAULT_DIR, ModelBank


def test_a_lazy_bank_loads_on_its_first_read() -> None:
    bank = ModelBank.load("", lazy=True)
    assert bank._pending  # nothing read yet
    assert bank.get("ensemble") is not None and bank.calibration is not None
    assert not bank._pending and bank.names() == ModelBank.load("").names()


def test_received_banks_are_loaded_once_per_process_until_an_artifact_changes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "models"
    shutil.copytree(DEFAULT_DIR, folder)
    sent = pickle.dumps(ModelBank.load(str(folder), lazy=True))
    first, second = pickle.loads(sent), pickle.loads(sent)
    assert first is second  # one bank per process and folder
    ensemble = first.get("ensemble")
    assert ensemble is not None and pickle.loads(sent).get("ensemble") is ensemble
    meta = folder / "gbm" / "meta.json"
    later = time.time() + 5
    os.utime(meta, (later, later))  # an artifact rewritten: the next job gets a fresh load
    fresh = pickle.loads(sent)
    assert fresh is not first and fresh.get("ensemble") is not None
    assert pickle.loads(pickle.dumps(ModelBank.load("none"))).get("ensemble") is None
