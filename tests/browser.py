"""Headless Chromium for the dashboard tests (Debian's chromium + chromium-driver through
selenium): launch flags, a driver factory, an HTTP wait and the not-blank screenshot check.

Shared by tests/dashboard/test_dashboard.py and tests/e2e/test_product.py so both drive the
browser the same way. `make test` installs the browser (Makefile target `browser`); a missing
browser is a failure, not a skip.
"""
from __future__ import annotations

import base64
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000"]

# pixel statistics of a PNG, computed by the browser itself (no image library needed here)
VARIANCE_JS = """
const done = arguments[arguments.length - 1];
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0, s = 0, s2 = 0; const colours = new Set();
  for (let i = 0; i < d.length; i += 4 * 7) {
    const y = (d[i] * 299 + d[i + 1] * 587 + d[i + 2] * 114) / 1000;
    n++; s += y; s2 += y * y; if (colours.size < 1000) colours.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
  }
  const mean = s / n; done([c.width, c.height, s2 / n - mean * mean, colours.size]);
};
img.onerror = () => done(null);
img.src = 'data:image/png;base64,' + arguments[0];
"""


def chrome_driver(extra_flags: list[str] | None = None) -> Any:
    """A headless Chromium webdriver with its own throw-away profile (a shared profile dir
    would make two concurrent test runs fight over its lock)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for f in LAUNCH_FLAGS + (extra_flags or []) + [f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(20)
    return driver


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Block until ``url`` answers 200 (OSError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def screenshot_not_blank(driver: Any, *paths: Path) -> bytes:
    """Take a screenshot, write it to each of ``paths`` and assert it is a real page: at least
    800x600 with luminance variance and more than a handful of colours (a blank or error page
    is one or two flat colours)."""
    png: bytes = driver.get_screenshot_as_png()
    for p in paths:
        p.write_bytes(png)
    stats = driver.execute_async_script(VARIANCE_JS, base64.b64encode(png).decode())
    assert stats is not None, "the screenshot is not a decodable PNG"
    w, h, variance, colours = stats
    assert w >= 800 and h >= 600, (w, h)
    assert variance > 100 and colours > 10, (variance, colours)  # not a blank page
    return png


__all__ = ["CHROMEDRIVER", "CHROMIUM", "LAUNCH_FLAGS", "VARIANCE_JS", "chrome_driver", "screenshot_not_blank",
           "wait_http"]
