"""Every integration page's example runs as it is against a real service.

The examples run one after the other in one interpreter (run_examples.py: each in its own
namespace, directory and output, with its own exit status) against one service, since each
reports to a study of its own: the frameworks are imported once, not once per page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.conftest import Service

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins"
RUNNER = Path(__file__).with_name("run_examples.py")
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


@dataclass
class Done:
    """How one example ended, as subprocess.run would say it."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def service(shared_service: Service) -> Service:
    return shared_service


@pytest.fixture(scope="module")
def examples(service: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Done]:
    """Every page's example, run once (on first use) in one interpreter against the service."""
    root = tmp_path_factory.mktemp("docs")
    jobs = []
    for page in PAGES:
        cwd = root / page
        cwd.mkdir()
        code = example(page).replace("127.0.0.1:50051", service.address)
        code = code.replace("/tmp/docs-hf", str(cwd / "hf"))
        jobs.append({"page": page, "code": code, "cwd": str(cwd)})
    (root / "jobs.json").write_text(json.dumps(jobs))
    results = root / "results.json"
    runner = subprocess.run(
        [sys.executable, str(RUNNER), str(root / "jobs.json"), str(results)],
        capture_output=True,
        text=True,
        timeout=300 * len(PAGES),
        cwd=root,
    )
    done = json.loads(results.read_text()) if results.exists() else {}
    # A page the interpreter did not get to (it died on an earlier one) fails with its output.
    died = Done(runner.returncode or 1, runner.stdout, runner.stderr)
    return {page: Done(**done[page]) if page in done else died for page in PAGES}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_example_runs_and_reports_to_the_service(page, service, examples):
    done = examples[page]
    assert done.returncode == 0, done.stderr[-3000:]
    study = PAGES[page]
    runs = service.runs(study)
    assert runs and all(r.n_points > 0 for r in runs), (study, done.stdout[-2000:])
