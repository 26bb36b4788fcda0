"""Debian's Chromium under Playwright, as the browser tests (widgets in Voila, lessons in JupyterLab, the site) use it.

Playwright drives the system Chromium through `executable_path` (`playwright install` is never used); if it is missing,
the tests fail with what to run, never skip.
"""
import os
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("LESSONKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium(profile: Path, width: int, height: int):
    "A fresh headless Chromium context with a private profile in `profile`, closed on exit."
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run tools/setup_browser.sh (installs Debian's chromium)"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_FLAGS, viewport={"width": width, "height": height})
        try: yield ctx
        finally: ctx.close()
