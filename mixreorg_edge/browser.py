"""The demo page in headless Chromium, driven by Playwright (for its test and `benchmarks/web_latency.py`).

The browser is the system's Chromium (Debian's `chromium` package, or `MIXREORG_CHROMIUM`), never one Playwright
downloads. Everything the page knows is read from `window.mixreorgDemo` (see `web/app.js`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# Quiet on a closed network: no background connections, no component updates; software rendering.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOAD_TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    return os.environ.get("MIXREORG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    """Why the page cannot be driven here (None when it can)."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "Chromium is not installed (Debian: apt-get install chromium; or set MIXREORG_CHROMIUM)"
    return None


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright `Browser` on the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_demo(browser: Any, url: str, backend: str = "wasm", threads: int = 2) -> Any:
    """A new page on the demo at `url`, once the artifact has loaded or failed to (`state` ready or error)."""
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(f"{url}?backend={backend}&threads={threads}")
    page.wait_for_function("() => ['ready', 'error'].includes(window.mixreorgDemo?.state)", timeout=LOAD_TIMEOUT_MS)
    return page


def demo_state(page: Any) -> dict[str, Any]:
    return page.evaluate("() => ({state: mixreorgDemo.state, error: mixreorgDemo.error, backend: mixreorgDemo.backend,"
                         " runs: mixreorgDemo.runs, updates: mixreorgDemo.updates, latencyMs: mixreorgDemo.latencyMs})")


def wait_for_update(page: Any, updates: int) -> None:
    """Until the page has drawn a label map or shown a message since it counted `updates`."""
    page.wait_for_function("n => mixreorgDemo.updates > n", arg=updates, timeout=LOAD_TIMEOUT_MS)


def segment(page: Any, image: Path) -> None:
    """Pick `image` in the page's file input and wait for its overlay (or an error message)."""
    updates = demo_state(page)["updates"]
    page.set_input_files("#image", str(image))
    wait_for_update(page, updates)


def page_labels(page: Any) -> np.ndarray:
    """The page's last label map, (H, W) int64."""
    found = page.evaluate("() => ({labels: Array.from(mixreorgDemo.labels), h: mixreorgDemo.height,"
                          " w: mixreorgDemo.width})")
    return np.asarray(found["labels"], dtype=np.int64).reshape(found["h"], found["w"])
