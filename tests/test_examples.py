"""Every example of the README and of datasets/README.md that reads a corpus or files runs, as
written, on what a fresh clone has (datasets/sample, datasets/law, datasets/long)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", REPO / "datasets" / "README.md")
NEEDS_A_SERVICE = ("serve", "demo", "health", "plot")


def examples() -> list[tuple[str, str]]:
    """(document, command) for each `forecaster ...` line of a bash block that names a file
    under datasets/ or reads one an earlier example wrote."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.DOTALL):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                command = line.split("  #")[0].strip()
                words = command.split()
                if len(words) < 2 or words[0] != "forecaster" or words[1] in NEEDS_A_SERVICE:
                    continue
                out.append((doc.name, command))
    return out


def test_the_documents_have_examples_on_the_sample():
    found = examples()
    assert any("datasets/sample" in c for _, c in found)
    assert any("forecaster law" in c and "datasets/law" in c for _, c in found)
    assert any(c.startswith("forecaster batch") for _, c in found)
    assert any(c.startswith("forecaster report") for _, c in found)
    assert any(c.startswith("forecaster train") for _, c in found)


@pytest.mark.slow
def test_every_example_runs_on_a_fresh_clone(tmp_path):
    (tmp_path / "datasets").symlink_to(REPO / "datasets")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "trainer_plugins")])}
    for doc, command in examples():
        words = shlex.split(command)
        result = subprocess.run(
            [sys.executable, "-m", "forecaster.cli", *words[1:], *_quiet(words)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{doc}: {command}\n{result.stderr[-3000:]}"
    assert (tmp_path / "report.html").exists() and (tmp_path / "results.parquet").exists()


def _quiet(words: list[str]) -> list[str]:
    """--no-progress where the command has it (the output is captured, not read)."""
    return ["--no-progress"] if words[1] in ("eval", "replay", "batch", "train") else []
