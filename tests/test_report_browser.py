"""The report page in a real headless Chromium (Debian's chromium and chromium-driver, installed by
scripts/setup_browser.sh): it loads with no console error and no network request, shows the
figures, filters and searches, and a hostile row never executes.

Without a browser the tests skip and say why; under CI=true a missing browser is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coevol.domain import Answer
from tests.browser_support import chrome, load_and_open_all, phone_layout, session
from tests.test_report_page import HOSTILE, _cli
from tests.test_report_support import failed, record, write_trace


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from session()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coevol.cli.report import run

    out = tmp_path_factory.mktemp("report") / "refined.json"
    hostile = record(
        1, [("assistant 2", "assistant 1")], instruction=HOSTILE, original=HOSTILE, suggestions=HOSTILE
    )
    hostile.turns[0].iterations[0].judge.orders[1].attempts[0] = Answer(HOSTILE, "stop")  # type: ignore[union-attr]
    records = [
        record(
            0,
            [("assistant 2", "assistant 1"), ("assistant 1", "assistant 2")],
            instruction="Explain photosynthesis.",
        ),
        hostile,
        failed(2),
        record(3, [("assistant 2", "assistant 2")], instruction="Name three rivers in Europe."),
    ]
    write_trace(out, records)
    assert run(_cli(str(out))) == 0
    return Path(f"{out}.report.html")


def _open(browser: Any, page: Path) -> None:
    browser.get(page.resolve().as_uri())
    browser.get_log("browser")  # start each test with an empty console


def _count(browser: Any) -> str:
    return str(browser.find_element("id", "f-count").text)


def test_loads_with_no_console_error_and_no_network(browser: Any, page: Path) -> None:
    errors, urls = load_and_open_all(browser, page.resolve().as_uri(), "details.sample")
    assert errors == []
    assert urls and all(u.startswith("file://") for u in urls), urls


def test_figures_are_present(browser: Any, page: Path) -> None:
    _open(browser, page)
    labels = [s.get_attribute("aria-label") for s in browser.find_elements("css selector", "svg[role=img]")]
    assert [label.split(":")[0] for label in labels] == ["Figure 2a", "Figure 2b", "Figure 3"]
    sunburst_tips = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg')[2].querySelectorAll('path > title')).map(t => t.textContent)"
    )
    assert "add: 3 suggestions" in sunburst_tips and "add example: 3" in sunburst_tips  # 3 advisor answers
    assert "Judge audit" in browser.find_element("tag name", "body").text


def test_filter_by_status_and_rounds_and_search(browser: Any, page: Path) -> None:
    from selenium.webdriver.support.ui import Select

    _open(browser, page)
    assert _count(browser) == "4 of 4 embedded samples"
    Select(browser.find_element("id", "f-status")).select_by_value("failed")
    assert _count(browser) == "1 of 4 embedded samples"
    assert len(browser.find_elements("css selector", "details.sample")) == 1
    Select(browser.find_element("id", "f-status")).select_by_value("")
    Select(browser.find_element("id", "f-rounds")).select_by_value("1")
    assert _count(browser) == "2 of 4 embedded samples"
    Select(browser.find_element("id", "f-rounds")).select_by_value("")
    box = browser.find_element("id", "f-text")
    box.send_keys("RIVERS in europe")
    browser.implicitly_wait(0)
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(browser, 5).until(lambda b: _count(b) == "1 of 4 embedded samples")
    summary = browser.find_element("css selector", "details.sample > summary").text
    assert "#3" in summary and "Name three rivers" in summary


def test_a_hostile_row_shows_as_text_and_never_runs(browser: Any, page: Path) -> None:
    _open(browser, page)
    for el in browser.find_elements("css selector", "details.sample"):
        el.click()
    assert browser.execute_script("return window.__pwned === undefined") is True
    assert (
        browser.execute_script("return document.querySelectorAll('main img, main a, main iframe').length")
        == 0
    )
    text = browser.find_element("tag name", "body").text
    assert '<img src=x onerror="window.__pwned=2">' in text
    assert "&lt;script&gt;window.__pwned=5&lt;/script&gt;" in text
    assert browser.execute_script("return document.scripts.length") == 2
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_figures_and_tables_read_with_javascript_off(page: Path) -> None:
    b = chrome(javascript=False)
    try:
        b.get(page.resolve().as_uri())
        figures = b.find_elements("css selector", "svg[role=img]")
        assert len(figures) == 3 and all(f.is_displayed() for f in figures)
        body = b.find_element("tag name", "body").text
        assert "Figure 2a" in body and "Figure 3" in body and "position consistency" in body
        assert "The sample browser needs JavaScript" in body
        assert not b.find_element("id", "browser").is_displayed()
    finally:
        b.quit()


def test_readable_on_a_phone(browser: Any, page: Path) -> None:
    """At 390 px (a phone) the page never scrolls sideways (wide tables and figures scroll inside
    their own boxes) and figure labels stay at least 8 px tall instead of shrinking to about 5."""
    found = phone_layout(browser, page.resolve().as_uri(), "details.sample")
    assert found["labels"] > 10
    assert found["overflow"] <= 0, found
    assert found["smallest_label"] >= 8, found
    assert found["smallest_cell"] >= 12, found
