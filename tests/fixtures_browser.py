"""Real headless Chromium (Debian's, driven by Playwright) for the web page tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium_page(profile: Path, **options: Any) -> Iterator[Any]:
    """A new page in a fresh Chromium profile at ``profile``; skips the test when Chromium or
    Playwright is missing (scripts/ci-apt.sh installs Chromium)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/ci-apt.sh installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, **options
        )
        try:
            yield context.new_page()
        finally:
            context.close()
