"""datasets/: the schema mirror matches the corpus's and the reader, the sample is small and
readable, the manifest's hashes are the files'."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from forecaster.corpus import reader
from forecaster.corpus.reader import sources

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"
SHARED = REPO.parent / "shared" / "datasets"


def _table_columns(text: str, heading: str) -> list[str]:
    """The column names of the table under the heading that contains `heading`."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)


def test_schema_mirror_is_the_corpus_schema():
    if not SHARED.exists():
        pytest.skip("../shared/datasets is absent: nothing to compare the mirror with")
    assert (DATASETS / "SCHEMA.md").read_text() == (SHARED / "SCHEMA.md").read_text()


def test_reader_reads_the_columns_the_schema_names():
    text = (DATASETS / "SCHEMA.md").read_text()
    run_columns = _table_columns(text, "`runs.parquet`")
    point_columns = _table_columns(text, "`points.parquet`")
    assert run_columns and point_columns
    for column in (*reader.REQUIRED_RUN_COLUMNS, *reader.OPTIONAL_RUN_COLUMNS):
        assert column in run_columns, column
    for column in (*reader.REQUIRED_POINT_COLUMNS, *reader.OPTIONAL_POINT_COLUMNS):
        assert column in point_columns, column


def test_sample_is_small_and_read_by_the_reader():
    files = [p for p in (DATASETS / "sample").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    found = sources(DATASETS / "sample")
    assert len(found) >= 2
    for source in found:
        runs = source.runs()
        assert runs["task"].n_unique() >= 3  # enough for train's task splits
        loaded = source.load(runs["run_id"].to_list())
        assert all(len(r.steps) for r in loaded)


def test_manifest_hashes_are_the_files():
    manifest = json.loads((DATASETS / "manifest.json").read_text())
    for name, entry in manifest["sample"].items():
        for file, digest in entry["sha256"].items():
            path = DATASETS / "sample" / name / file
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
    for folder in ("law", "long"):
        for file, entry in manifest[folder].items():
            path = DATASETS / folder / file
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
    if SHARED.exists():
        for name in manifest["corpus"]:
            assert (SHARED / name).is_dir(), name


def test_every_shipped_source_has_its_licence_in_the_readme():
    text = (DATASETS / "README.md").read_text()
    for source in sources(DATASETS / "sample"):
        assert f"`sample/{source.name}`" in text
    assert "MIT" in text and "Apache-2.0" in text
