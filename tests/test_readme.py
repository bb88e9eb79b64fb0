"""The README's two commands are the ones that work: CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_serve_and_test_commands():
    serve, test = readme_commands()[:2]
    assert serve.endswith("forecaster serve") and "pip install" in serve
    assert "pytest" in test and ".[dev]" in test
    assert test in (REPO / ".ci" / "run").read_text()


def test_torch_pin_is_everywhere_it_is_installed():
    assert '"torch==2.13.0"' in (REPO / "pyproject.toml").read_text()
    assert "torch==2.13.0" in (REPO / "Dockerfile").read_text()
    plugins = (REPO / "trainer_plugins" / "pyproject.toml").read_text()
    torch_requirements = re.findall(r'"(torch[^"]*)"', plugins)
    assert torch_requirements and set(torch_requirements) == {"torch==2.13.0"}


def test_readme_python_examples_run_against_a_real_server(live_server, capsys):
    """The quickstart (Reporter, then StudyClient), then the raw gRPC example; the later
    snippets (TLS: they need certificates and a remote host) must at least compile."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    quickstart, raw, *snippets = blocks
    for snippet in snippets:
        compile(snippet, "README", "exec")
    exec(compile(quickstart.replace("127.0.0.1:50051", live_server.address), "README", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] in (["continue", "promising"], ["continue", "warmup"])
    assert lines[1].startswith("final val_loss ") and "at step 10k" in lines[1]
    assert lines[2].startswith("[10000] [")  # fc.steps, then the median as an array
    assert lines[3].split()[:2] == ["lr=0.1", "finished"]
    assert lines[4].split()[0].isdigit()  # the history: step, action, reason
    exec(compile(raw.replace("127.0.0.1:50051", live_server.address), "README", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("ACTION_CONTINUE REASON_")
