"""The page and the command: hostile rows stay text, the page needs no network, missing extras are
named, the JSON document is complete, and a real run (fake server, real CLI) reports end to end."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from coevol.cli.report import add_parser, run
from coevol.cli.report_targets import report_paths
from coevol.domain import Answer
from coevol.errors import DataError, MissingExtra
from coevol.report import build as build_mod
from coevol.report.page import INSTALL_LINE, embed_json
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to, identify_role
from tests.conftest import ALPACA_ROWS, coevol_cli
from tests.test_report_support import failed, record, write_trace

HOSTILE = (
    '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
    '<svg onload="window.__pwned=3"></svg><a href="javascript:window.__pwned=4">click</a>'
    "&lt;script&gt;window.__pwned=5&lt;/script&gt; <!-- \u2028\u2029 --> <style>*{display:none}</style>"
)
_ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "div", "strong", "code",
    "br", "table", "tr", "th", "td", "figure", "figcaption", "svg", "rect", "line", "text", "path", "script",
    "noscript", "label", "select", "option", "input", "span", "button",
}  # fmt: skip


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.script_bodies.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies[-1] += data


def _cli(*args: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["report", *args])


def _hostile_run(tmp_path: Path) -> Path:
    out = tmp_path / "refined.json"
    bad = record(
        0, [("assistant 2", "assistant 1")], instruction=HOSTILE, original=HOSTILE, suggestions=HOSTILE
    )
    bad.id = HOSTILE
    bad.turns[0].iterations[0].judge.orders[0].attempts[0] = Answer(HOSTILE, "length")  # type: ignore[union-attr]
    write_trace(out, [bad, record(1, [("assistant 2", "assistant 2")]), failed(2)])
    return out


def test_hostile_rows_never_become_markup(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    page = Path(f"{out}.report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert set(tags) <= _ALLOWED_TAGS, set(tags) - _ALLOWED_TAGS
    assert tags.count("script") == 2 and tags.count("style") == 1 and "img" not in tags and "a" not in tags
    for _, attrs in parser.tags:
        assert not [k for k in attrs if k.startswith("on")], attrs
        assert not any("javascript:" in (v or "") for v in attrs.values())
    data_tag = next(a for t, a in parser.tags if t == "script" and a.get("type") == "application/json")
    assert data_tag["id"] == "samples-data"
    data = next(b for b in parser.script_bodies if b.startswith('{"samples"'))
    assert "<" not in data and ">" not in data and "&" not in data and "\u2028" not in data
    samples = json.loads(data)["samples"]
    assert samples[0]["turns"][0]["instruction"] == HOSTILE  # intact, only encoded
    assert samples[0]["id"] == HOSTILE[:200]  # ids are cut at 200 characters
    assert parser.script_bodies[1].startswith("\n(function () {")  # the page's own script, intact


def test_the_page_forbids_the_network_and_inline_handlers(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    run(_cli(str(out), "--tokenizer", "words", "--no-directions"))
    page = Path(f"{out}.report.html").read_text()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert csp is not None
    policy = dict(part.strip().split(" ", 1) for part in csp.group(1).split(";"))
    assert policy["default-src"] == "'none'"
    assert (
        policy["connect-src"] == "'none'" and policy["img-src"] == "'none'" and policy["font-src"] == "'none'"
    )
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+=*'", policy["script-src"])
    assert "unsafe-inline" not in csp.group(1) and "unsafe-hashes" not in csp.group(1)
    # nothing the page loads: no src/href attributes at all, and no URL except the SVG namespace
    assert not re.search(r"\s(?:src|href)\s*=", page.split('<script type="application/json"')[0])
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page.split('<script type="application/json"')[0]))
    assert urls <= {"http://www.w3.org/2000/svg"}


def test_embed_json_escapes_everything_that_could_end_a_script() -> None:
    assert embed_json({"a": "</script>&\u2028\u2029<!--"}) == (
        '{"a":"\\u003c/script\\u003e\\u0026\\u2028\\u2029\\u003c!--"}'
    )


def test_report_json_document_fields(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    (tmp_path / "refined.json.rejects.jsonl").write_text('{"line": 9}\n\n{"line": 10}\n')
    assert run(_cli(str(out), "--tokenizer", "words")) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    for key in ("schema", "units", "status", "rounds", "length", "directions", "judge", "usage"):
        assert key in doc
    assert doc["schema"] == "coevol.report/1"
    assert doc["status"] == {"refined": 1, "kept": 1, "failed": 1, "rejected": 2}
    assert doc["rows"] == 5 and doc["units"] == 3
    assert set(doc["length"]) == {
        "tokenizer",
        "original_mean",
        "final_mean",
        "original_median",
        "final_median",
    }
    assert set(doc["directions"]) == {"suggestions", "sampled", "parsed", "verbs", "pairs", "top"}
    assert {"comparisons", "consistent", "primacy", "recency", "position_consistency", "preference_fairness",
            "ties", "unparseable", "accepted_longer"} <= set(doc["judge"])  # fmt: skip
    assert set(doc["usage"]) == {"calls", "cached", "by_role", "cost"}
    assert set(doc["usage"]["by_role"]["judge"]) == {"calls", "prompt_tokens", "completion_tokens", "cost"}


def test_without_the_extra_the_page_names_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tiktoken(name: str) -> Any:
        raise MissingExtra("response lengths in cl100k_base tokens (Fig. 2b)", "report")

    def no_spacy() -> Any:
        raise MissingExtra("evolving directions (Fig. 3, spaCy's English pipeline)", "report")

    monkeypatch.setattr(build_mod, "load_tokenizer", no_tiktoken)
    monkeypatch.setattr(build_mod, "load_extractor", no_spacy)
    out = _hostile_run(tmp_path)
    assert run(_cli(str(out))) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert [m["part"] for m in doc["missing"]] == ["length", "directions"]
    assert all(m["install"] == INSTALL_LINE == "pip install 'coevol[report]'" for m in doc["missing"])
    assert doc["length"]["original_mean"] is None and doc["directions"] is None
    assert doc["judge"]["comparisons"] == 2  # the rest is still computed
    page = Path(f"{out}.report.html").read_text()
    assert page.count("pip install &#x27;coevol[report]&#x27;") == 2
    assert "Figure 2a" in page and "Judge audit" in page


def test_other_output_paths_and_errors(tmp_path: Path) -> None:
    assert report_paths(Path("a/out.json"), None) == (
        Path("a/out.json.report.html"),
        Path("a/out.json.report.json"),
    )
    assert report_paths(Path("x.json"), Path("r/page.html")) == (Path("r/page.html"), Path("r/page.json"))
    assert report_paths(Path("x.json"), Path("r/page")) == (Path("r/page"), Path("r/page.json"))
    trace = write_trace(tmp_path / "given.json", [record(0, [("assistant 2", "assistant 1")])])
    assert run(_cli(str(trace), "--tokenizer", "words", "--no-directions")) == 0  # the trace itself
    assert (tmp_path / "given.json.report.html").exists()
    with pytest.raises(DataError, match="no trace beside"):
        run(_cli(str(tmp_path / "nothing.json")))


def test_unreadable_lines_are_counted_and_another_schema_is_refused(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    trace = Path(f"{out}.trace.jsonl")
    trace.write_bytes(trace.read_bytes() + b'{"schema": "coevol.trace/2", "index": 1}\n{"cut off')
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["source"]["unreadable_lines"] == 2 and doc["rows"] == 3
    assert "2 trace lines could not be read" in Path(f"{out}.report.html").read_text()
    trace.write_bytes(b'{"index": 0, "status": "kept"}\n')
    with pytest.raises(DataError, match="no schema field"):
        run(_cli(str(out), "--tokenizer", "words"))


def test_an_interrupted_run_is_read_from_its_partial_trace(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    trace = Path(f"{out}.trace.jsonl")
    trace.rename(trace.with_name(trace.name + ".partial"))
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["source"]["interrupted"] is True and doc["rows"] == 3


def test_large_runs_embed_a_bounded_stated_selection(tmp_path: Path) -> None:
    out = tmp_path / "big.json"
    records = [failed(i) if i % 50 == 0 else record(i, [("assistant 2", "assistant 1")]) for i in range(300)]
    write_trace(out, records)
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions", "--max-samples", "20")) == 0
    page = Path(f"{out}.report.html").read_text()
    data = json.loads(page.split('id="samples-data">')[1].split("</script>")[0])
    shown = data["samples"]
    assert len(shown) == 20
    assert {s["index"] for s in shown if s["status"] == "failed"} == {0, 50, 100, 150, 200, 250}
    assert (
        "20 of 300 rows are shown: all 6 failed or unusual rows and a random sample of 14 of the 294" in page
    )
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["rows"] == 300 and doc["status"]["failed"] == 6  # the JSON counts every row


class _Position2Judge(CoEvolResponder):
    """A judge that answers by position: always Assistant 2, whatever it is shown."""

    def __call__(self, body: dict[str, Any]) -> str:
        if identify_role(body["messages"]) == "judge":
            return "<assistant 2>\nAssistant 2 is better."
        return super().__call__(body)


@pytest.mark.parametrize(
    ("judge", "consistency", "finding"), [("fair", 1.0, False), ("position-2", 0.0, True)]
)
async def test_end_to_end_with_a_real_run(
    write_json: Callable[[str, Any], Path], tmp_path: Path, judge: str, consistency: float, finding: bool
) -> None:
    rows = [dict(r, id=f"{r['id']}-{i}") for i in range(4) for r in ALPACA_ROWS]
    src = write_json("data.json", rows)
    out = tmp_path / "refined.json"
    responder = CoEvolResponder(accept_up_to(2)) if judge == "fair" else _Position2Judge()
    async with FakeOpenAIServer(responder) as server:
        code, _, stderr = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "--quiet",
        )  # fmt: skip
        assert code == 0, stderr
        sent = len(server.requests)
    assert run(_cli(str(out))) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["rows"] == doc["units"] == 12
    assert doc["judge"]["position_consistency"] == consistency
    if judge == "fair":
        assert doc["rounds"] == {"0": 0, "1": 0, "2": 12, "3": 0}
        assert doc["status"]["refined"] == 12
        assert doc["judge"]["comparisons"] == 36 and doc["judge"]["accepted_longer"] == 1.0
        assert doc["length"]["final_mean"] > doc["length"]["original_mean"]
    else:
        assert doc["rounds"]["0"] == 12 and doc["judge"]["recency"] == 12
        assert doc["judge"]["preference_fairness"] == 1.0
    assert doc["directions"]["top"][0]["count"] > 0
    # the four copies of each row share identical calls: only the first copy's are sent
    assert doc["usage"]["calls"] == 4 * sent and doc["usage"]["cached"] == 3 * sent
    assert set(doc["models"]) == {"positive", "critical", "advisor", "editor", "judge"}
    assert doc["wall_time_s"] is not None and doc["wall_time_s"] >= 0
    page = Path(f"{out}.report.html").read_text()
    assert ("Check the judge" in page) is finding


def test_prices_from_the_runs_config_give_cost_per_role(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        "price:\n  prompt: 1.0\n  completion: 2.0\nroles:\n  judge:\n    price: {prompt: 10, completion: 20}\n"
    )
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions", "--config", str(config))) == 0
    usage = json.loads(Path(f"{out}.report.json").read_text())["usage"]
    # two records with usage: judge 2 x (100 prompt, 20 completion) + 2 x editor (50, 30)
    assert usage["by_role"]["judge"]["cost"] == pytest.approx((200 * 10 + 40 * 20) / 1e6)
    assert usage["by_role"]["editor"]["cost"] == pytest.approx((100 * 1 + 60 * 2) / 1e6)
    assert usage["cost"] == pytest.approx((2800 + 220) / 1e6)
    assert "$0.0030" in Path(f"{out}.report.html").read_text()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["turns"][0].__setitem__("original", 5),
        lambda d: d["turns"][0].__setitem__("accepted_rounds", 10**12),
        lambda d: d.__setitem__("accepted_rounds", -1),
        lambda d: d["usage"]["judge"].__setitem__("calls", "many"),
        lambda d: d["turns"][0]["iterations"][0]["suggestions"].__setitem__("text", ["a list"]),
        lambda d: d["turns"][0]["iterations"][0]["judge"]["orders"][0].__setitem__("verdict", {"x": 1}),
        lambda d: d["turns"][0]["iterations"][0].__setitem__("judge", "not an object"),
        lambda d: d["roles"]["judge"].__setitem__("model", None),
        lambda d: d.__setitem__("turns", [7]),
    ],
)
def test_a_record_with_hostile_types_is_counted_not_fatal(
    tmp_path: Path, mutate: Callable[[Any], None]
) -> None:
    out = tmp_path / "refined.json"
    write_trace(
        out, [record(0, [("assistant 2", "assistant 1")]), record(1, [("assistant 2", "assistant 1")])]
    )
    trace = Path(f"{out}.trace.jsonl")
    first, second = trace.read_text().splitlines()
    bad = json.loads(first)
    mutate(bad)
    trace.write_text(json.dumps(bad) + "\n" + second + "\n")
    assert run(_cli(str(out))) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["rows"] == 1 and doc["source"]["unreadable_lines"] == 1
    assert doc["rounds"] == {"0": 0, "1": 1, "2": 0, "3": 0}


def test_a_corrupt_store_is_named_not_fatal(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    Path(f"{out}.coevol.db").write_bytes(b"this is not a database" * 100)
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["usage"]["cached"] is None and doc["wall_time_s"] is None
    assert "could not be read" in Path(f"{out}.report.html").read_text()


async def test_the_coevol_report_command(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    code, _, stderr = await coevol_cli("report", str(out), "-o", str(tmp_path / "r" / "page.html"))
    assert code == 1 and "cannot write" in stderr  # the folder does not exist: a clear error, no traceback
    (tmp_path / "r").mkdir()
    code, _, stderr = await coevol_cli("report", str(out), "-o", str(tmp_path / "r" / "page.html"))
    assert code == 0, stderr
    assert "report: " in stderr and "page.html" in stderr and "Traceback" not in stderr
    assert json.loads((tmp_path / "r" / "page.json").read_text())["schema"] == "coevol.report/1"
    code, _, stderr = await coevol_cli("report", str(tmp_path / "missing.json"))
    assert code == 1 and "no trace beside" in stderr


def test_planted_links_at_the_report_files_never_redirect_a_write(tmp_path: Path) -> None:
    out = _hostile_run(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in (".report.html.partial", ".report.json.partial"):
        Path(f"{out}{name}").symlink_to(victim)
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    assert victim.read_text() == "keep me"
    assert "<html" in Path(f"{out}.report.html").read_text()
    assert not Path(f"{out}.report.html.partial").exists()
