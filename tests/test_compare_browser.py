"""The comparison page in a real headless Chromium (see tests/test_report_browser.py for the setup):
no console error, no network, filtering and search work, a hostile row never runs, and the totals
read with JavaScript off. Without a browser the tests skip and say why (fail under CI=true)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import chrome, load_and_open_all, phone_layout, session
from tests.compare_support import plus_judge, write_rows
from tests.test_report_page import HOSTILE


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from session()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coevol.cli.compare import report_compare
    from coevol.cli.main import main
    from coevol.testing import ThreadedServer

    d = tmp_path_factory.mktemp("compare")
    rows = [
        ("Name a river.", "Nile", "Nile+++"),
        (HOSTILE, "a++", "a"),
        ("Same.", "x", "x"),
        ("Sum 2+2.", "4", "4+"),
    ]
    base = write_rows(d / "base.jsonl", [{"instruction": i, "input": "", "output": b} for i, b, _ in rows])
    cand = write_rows(d / "cand.jsonl", [{"instruction": i, "input": "", "output": c} for i, _, c in rows])
    out = d / "r.json"
    with ThreadedServer(responder=plus_judge) as s:
        assert main(["compare", str(base), str(cand), "-o", str(out), "--base-url", s.base_url, "-q"]) == 0
    ns = type("NS", (), {"output": out, "out": None, "max_samples": 1000})()
    assert report_compare(ns) == 0
    return Path(f"{out}.report.html")


def _count(browser: Any) -> str:
    return str(browser.find_element("id", "f-count").text)


def test_loads_with_no_console_error_and_no_network(browser: Any, page: Path) -> None:
    errors, urls = load_and_open_all(browser, page.resolve().as_uri(), "details.unit")
    assert errors == []
    assert urls and all(u.startswith("file://") for u in urls), urls


def test_filter_by_outcome_and_search(browser: Any, page: Path) -> None:
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(page.resolve().as_uri())
    assert _count(browser) == "4 of 4 shown"
    Select(browser.find_element("id", "f-outcome")).select_by_value("win")
    assert _count(browser) == "2 of 4 shown"  # Nile+++ (gap 3) and 4+ (gap 1, eq4)
    Select(browser.find_element("id", "f-outcome")).select_by_value("")
    browser.find_element("id", "f-text").send_keys("NAME A RIVER")
    WebDriverWait(browser, 5).until(lambda b: _count(b) == "1 of 4 shown")
    visible = [e for e in browser.find_elements("css selector", "details.unit") if e.is_displayed()]
    assert len(visible) == 1 and "Name a river." in visible[0].text


def test_a_hostile_row_shows_as_text_and_never_runs(browser: Any, page: Path) -> None:
    browser.get(page.resolve().as_uri())
    for el in browser.find_elements("css selector", "details.unit"):
        el.click()
    assert browser.execute_script("return window.__pwned === undefined") is True
    assert (
        browser.execute_script("return document.querySelectorAll('main img, main a, main iframe').length")
        == 0
    )
    assert browser.execute_script("return document.scripts.length") == 1
    assert '<img src=x onerror="window.__pwned=2">' in browser.find_element("tag name", "body").text


def test_totals_read_with_javascript_off(page: Path) -> None:
    b = chrome(javascript=False)
    try:
        b.get(page.resolve().as_uri())
        body = b.find_element("tag name", "body").text
        assert "Filtering needs JavaScript" in body and "position consistency" in body
        assert b.find_element("css selector", "svg[role=img]").is_displayed()
        assert not b.find_element("id", "browser").is_displayed()
        assert len(b.find_elements("css selector", "details.unit")) == 4
    finally:
        b.quit()


def test_readable_on_a_phone(browser: Any, page: Path) -> None:
    found = phone_layout(browser, page.resolve().as_uri(), "details.unit")
    assert found["labels"] >= 3
    assert found["overflow"] <= 0, found
    assert found["smallest_label"] >= 8, found
    assert found["smallest_cell"] >= 12, found
