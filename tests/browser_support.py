"""Real headless Chromium for the page tests (Debian's chromium and chromium-driver, installed by
scripts/setup_browser.sh). Without a browser a test skips and says why; under CI=true it fails."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any, NoReturn

_SETUP = "bash scripts/setup_browser.sh"


def need(what: str) -> NoReturn:
    import pytest

    message = f"{what}; install it with {_SETUP} (and pip install -e '.[dev]')"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def chrome(javascript: bool) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need("selenium is not installed")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        need("the chromium browser or chromedriver is not on PATH")
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def session() -> Iterator[Any]:
    """A browser for a module's tests (the body of a module-scoped fixture)."""
    b = chrome(javascript=True)
    try:
        yield b
    finally:
        b.quit()


def load_and_open_all(browser: Any, uri: str, details: str) -> tuple[list[Any], list[str]]:
    """Load ``uri``, open every ``details`` element; the console warnings/errors and every URL
    the page requested."""
    browser.get_log("performance")
    browser.get(uri)
    for el in browser.find_elements("css selector", details):
        el.click()
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return errors, urls


_PHONE_CHECK = """
const texts = Array.from(document.querySelectorAll('svg[role=img] text'))
  .map(t => t.getBoundingClientRect().height).filter(h => h > 0);
const cells = Array.from(document.querySelectorAll('main table td, main table th'))
  .map(c => parseFloat(getComputedStyle(c).fontSize));
return {overflow: document.documentElement.scrollWidth - window.innerWidth,
        smallest_label: Math.min(...texts), smallest_cell: Math.min(...cells), labels: texts.length};
"""


def phone_layout(browser: Any, uri: str, details: str) -> dict[str, float]:
    """Load ``uri`` at 390 px wide with every ``details`` open: how far the page overflows sideways,
    the smallest rendered figure label and table font (px), and how many labels were measured."""
    browser.set_window_size(390, 1800)
    try:
        browser.get(uri)
        for el in browser.find_elements("css selector", details):
            el.click()
        found: dict[str, float] = browser.execute_script(_PHONE_CHECK)
    finally:
        browser.set_window_size(1400, 1800)
    return found
