"""What the benchmarks share: the corpus arguments, and writing one benchmark's table into
docs/benchmarks.md (replacing its previous section)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each section is replaced when "
    "its script runs again. The machine is shared and noisy: compare ratios measured in one "
    "run.\n"
)


def write_section(name: str, body: str) -> Path:
    text = DOC.read_text() if DOC.exists() else HEADER
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section + "\n")
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    return DOC


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def corpus_parser(doc: str) -> argparse.ArgumentParser:
    """--corpus (default ../shared/datasets beside the repository), --max-runs-per-task,
    --workers and --no-write; a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    default_corpus = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    parser.add_argument("--corpus", default=str(default_corpus))
    parser.add_argument("--max-runs-per-task", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def corpus_found(corpus: str) -> bool:
    if Path(corpus).is_dir():
        return True
    print(f"corpus {corpus} not found; pass --corpus", file=sys.stderr)
    return False


_LOSO_SIZES = {"max_runs_per_task": "runs-per-task", "synthetic_tasks": "synthetic-tasks",
               "pretrain_epochs": "pretrain-epochs", "finetune_epochs": "finetune-epochs",
               "gbm_rounds": "gbm-rounds"}  # fmt: skip


def add_loso_arguments(parser: argparse.ArgumentParser) -> None:
    """--loso-* flags for the sizes of the leave-one-source-out banks, and --cache."""
    from forecaster.evaluation.loso import LosoTraining

    parser.add_argument("--cache", default=None, help="LOSO bank cache (default: the user cache)")
    defaults = LosoTraining()
    for field, flag in _LOSO_SIZES.items():
        parser.add_argument(f"--loso-{flag}", type=int, default=getattr(defaults, field))


def loso_training(args: argparse.Namespace) -> tuple[object, Path]:
    """The LosoTraining the --loso-* flags ask for, and the bank cache folder."""
    from forecaster.evaluation.loso import LosoTraining, default_cache

    training = LosoTraining(
        **{
            field: getattr(args, f"loso_{flag.replace('-', '_')}")
            for field, flag in _LOSO_SIZES.items()
        }
    )
    return training, Path(args.cache) if args.cache else default_cache()


def loso_flags(training: object) -> str:
    """The --loso-* flags that give training, for the command line a section quotes."""
    return " ".join(
        f"--loso-{flag} {getattr(training, field)}" for field, flag in _LOSO_SIZES.items()
    )
