"""Headless Chromium (Debian's ``chromium``): a page's DOM after its scripts ran, or a PNG."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome")
# no first-run UI, no updater, no background requests: the page is all it loads
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars"]  # fmt: skip


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _run(args: list[str], budget_ms: int, timeout_s: int) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               *args]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)


def dump_dom(url: str, budget_ms: int = 10_000, timeout_s: int = 120) -> str:
    """The page's DOM (as HTML) once its scripts have had ``budget_ms`` of virtual time."""
    return _run(["--dump-dom", url], budget_ms, timeout_s).stdout


def screenshot(
    url: str, png: Path, size: tuple[int, int] = (1600, 900), budget_ms: int = 20_000,
    timeout_s: int = 180,
) -> Path:  # fmt: skip
    """A PNG of the page at ``size`` (width, height) after ``budget_ms`` of virtual time."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", url], budget_ms, timeout_s)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return png
