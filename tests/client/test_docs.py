"""Every integration page's example runs as it is against a real service."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins"
# Each page's example and the study it reports to.
PAGES = {
    "reporter": "docs-reporter",
    "pytorch": "docs-pytorch",
    "lightning": "docs-lightning",
    "huggingface": "docs-hf",
    "keras": "docs-keras",
    "optuna": "docs-optuna",
    "ray_tune": "docs-tune",
}


def example(page: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / f"{page}.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, f"{page}.md should have exactly one python example"
    return blocks[0]


def test_every_integration_has_a_page_listed_in_the_index():
    index = (DOCS / "README.md").read_text()
    for page in PAGES:
        assert (DOCS / f"{page}.md").exists() and f"({page}.md)" in index


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_example_runs_and_reports_to_the_service(page, service, tmp_path):
    code = example(page).replace("127.0.0.1:50051", service.address)
    code = code.replace("/tmp/docs-hf", str(tmp_path / "hf"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = PAGES[page]
    runs = service.runs(study)
    assert runs and all(r.n_points > 0 for r in runs), (study, done.stdout[-2000:])
