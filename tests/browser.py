"""Headless Chromium with the network cut off, to prove a page renders offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # Any attempt to reach the network fails: a page that needs a CDN renders without it.
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is required for report tests: `make test` installs it (apt-get install chromium)"
    return path


def render(page: Path, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM after Chromium loaded `page` offline (and a screenshot, if asked)."""
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    if screenshot:
        subprocess.run([*command, "--window-size=1200,1400", f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
    result = subprocess.run([*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout
