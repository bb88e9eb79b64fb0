"""A real headless browser for the tests of pages: Debian's Chromium, installed when absent.

Chromium's own command line is enough for what the tests ask: ``--dump-dom`` prints the DOM after
the page's scripts ran, ``--screenshot`` writes a PNG. The flags keep it off the network this
machine does not have (background networking, component updates, sync), as the workplace's notes
advise; ``--no-sandbox`` because CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary, installing Debian's package first when none is on the PATH."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            check=False,
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
        if found:
            return found
    pytest.fail("no Chromium: install Debian's `chromium` package (apt-get install -y chromium)")


def _run(url: str, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )


def dump_dom(url: str, *, budget_ms: int = 3000) -> str:
    """The page's DOM as HTML, after its scripts had budget_ms of virtual time to run."""
    return _run(url, f"--virtual-time-budget={budget_ms}", "--dump-dom").stdout


def screenshot(url: str, out_png: Path, *, size: tuple[int, int] = (1280, 900)) -> Path:
    """Writes a PNG of the page as Chromium renders it and returns its path."""
    _run(url, f"--window-size={size[0]},{size[1]}", f"--screenshot={out_png}")
    if not out_png.exists():
        pytest.fail(f"Chromium wrote no screenshot to {out_png}")
    return out_png


def is_blank(png: Path) -> bool:
    """True when the picture is one flat colour: nothing was drawn."""
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    return float(pixels.std()) < 1.0
