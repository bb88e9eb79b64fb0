"""The flags eval, replay and train share, each declared once, and their parsing helpers.

Each `add_*` adds one flag to a command's parser where the command places it (argparse lists
flags in the order they are added, so `--help` reads as the command declares it); a command
that words a flag for its own case passes the help text.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    Commands = _SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "add_corpus",
    "add_json",
    "add_max_runs_per_task",
    "add_models_dir",
    "add_no_progress",
    "add_seed",
    "add_sources",
    "add_workers",
    "csv",
    "csv_all",
    "models_dir",
]


def add_corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="folder of <source>/{runs,points}.parquet")


def add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", help="comma-separated source folders (default: all)")


def add_max_runs_per_task(
    parser: argparse.ArgumentParser, default: int, help: str = "0 = every run"
) -> None:
    parser.add_argument("--max-runs-per-task", type=int, default=default, help=help)


def add_seed(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--seed", type=int, default=0, help=help)


def add_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="processes (default: the CPU count, up to 8)")


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        help="learned models' artifacts (default: FORECASTER_MODELS_DIR, else the shipped ones)",
    )


def add_json(
    parser: argparse.ArgumentParser, help: str = 'print {"results": [...]} as JSON'
) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_no_progress(
    parser: argparse.ArgumentParser, help: str = "no progress bar on stderr"
) -> None:
    parser.add_argument("--no-progress", action="store_true", help=help)


def csv(text: str | None) -> list[str] | None:
    """The items of a comma-separated flag; None when it is empty or not given."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def csv_all(texts: list[str] | None) -> list[str]:
    """The items of a repeatable comma-separated flag (`--x a,b --x c`), in order, once each."""
    items = [item for text in texts or [] for item in csv(text) or []]
    return list(dict.fromkeys(items))


def models_dir(flag: str | None) -> str:
    """--models-dir, else FORECASTER_MODELS_DIR, else "" (the shipped models): the setting
    `serve` reads, from the one place that reads settings."""
    from forecaster.config import Settings

    return Settings.from_env(models_dir=flag).models_dir
