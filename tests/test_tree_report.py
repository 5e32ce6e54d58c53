"""The report of a tree run: depth reached and pass rate beside Fig. 2, the tree in each sample."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from coevol.audit import JudgeAudit
from coevol.cli.report import run
from coevol.domain import TraceRecord
from coevol.io.tracefile import read_trace
from coevol.testing.responders import CoEvolResponder, accept_up_to
from coevol.testing.tree import Label, TreeResponder

from .engine_support import ThreadedServer, refine_file, write_jsonl
from .test_report_page import HOSTILE, _cli


def votes(response: str) -> list[list[Label]]:
    """Row 0's original passes; row 1 passes at depth 2; row 2 never passes."""
    if response.startswith("fine"):
        return [["Yes"] * 5]
    if response.startswith("deep") and response.count("|") == 2:
        return [["Yes", "Yes", "Yes", "No", "No"]]
    return [["No"] * 5]


def test_a_tree_run_reports_depths_pass_rate_and_each_tree(tmp_path: Path) -> None:
    rows = [
        {"instruction": "A", "input": "", "output": "fine"},
        {"instruction": "B", "input": "", "output": f"deep {HOSTILE}"},
        {"instruction": "C", "input": "", "output": "never"},
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.json"
    with ThreadedServer(responder=TreeResponder(votes)) as server:
        asyncio.run(refine_file(server.base_url, data, out, strategy="tree", tree={"depth": 2}))
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    doc = json.loads(Path(f"{out}.report.json").read_text())
    assert doc["tree"] == {
        "units": 3,
        "depth": {"0": 1, "1": 0, "2": 2},
        "passed": 2,
        "root_passes": 1,
        "pass_rate": 2 / 3,
    }
    page = Path(f"{out}.report.html").read_text()
    assert (
        "Final pass rate: <strong>67%</strong> (2 of 3: 1 originals already passed, 1 found in the tree)"
        in page
    )
    assert HOSTILE not in page  # the row's markup is data in the embedded JSON, never markup
    data_json = json.loads(page.split('id="samples-data">')[1].split("</script>")[0])
    trees = {s["index"]: s["turns"][0]["tree"] for s in data_json["samples"]}
    assert trees[0] == {"path": [0], "nodes": [[0, None, 0, 1.0, None, "fine"]]}
    assert trees[1]["path"] == [0, 2, 9] and len(trees[1]["nodes"]) == 10
    assert trees[1]["nodes"][0][5] == f"deep {HOSTILE}"[:400]
    assert trees[2]["path"] == [0, 2, 9] and all(n[3] == 0.0 for n in trees[2]["nodes"])
    config = tmp_path / "run.yaml"
    config.write_text("roles:\n  critic:\n    price: {prompt: 1, completion: 2}\n")
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions", "--config", str(config))) == 0
    usage = json.loads(Path(f"{out}.report.json").read_text())["usage"]["by_role"]
    critic = usage["critic"]
    assert critic["calls"] == 1 + 10 + 10  # row 0: the root; rows 1 and 2: 1 + 3 + 6 evaluations
    assert critic["cost"] == (critic["prompt_tokens"] + 2 * critic["completion_tokens"]) / 1e6
    assert usage["refiner"]["cost"] is None


def test_the_tree_view_in_a_real_browser(tmp_path: Path) -> None:
    """Nodes by depth coloured by value, the path outlined, hostile responses inert (Chromium)."""
    from tests.browser_support import chrome, load_and_open_all

    rows = [{"instruction": "B", "input": "", "output": f"deep {HOSTILE}"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.json"
    with ThreadedServer(responder=TreeResponder(votes)) as server:
        asyncio.run(refine_file(server.base_url, data, out, strategy="tree", tree={"depth": 2}))
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    browser = chrome(javascript=True)
    try:
        errors, urls = load_and_open_all(
            browser, Path(f"{out}.report.html").resolve().as_uri(), "details.sample"
        )
        assert errors == [] and all(u.startswith("file://") for u in urls)
        query = "return Array.from(document.querySelectorAll('.tree .tnode')).map(e => [e.textContent, e.className]);"
        chips: list[list[str]] = []
        for _ in range(200):  # a sample renders on its toggle event, which may come a moment later
            chips = browser.execute_script(query)
            if chips:
                break
            time.sleep(0.05)
        assert len(chips) == 10
        assert chips[0] == ["#0 0.00", "tnode tv0 onpath"]
        assert ["#9 0.60", "tnode tv3 onpath"] in chips and ["#4 0.60", "tnode tv3"] in chips
        levels = browser.execute_script(
            "return Array.from(document.querySelectorAll('.tree .lvl .d')).map(e => e.textContent);"
        )
        assert levels == ["depth 0", "depth 1", "depth 2"]
        assert browser.execute_script("return window.__pwned === undefined") is True
        title = browser.execute_script("return document.querySelector('.tree .tnode').title")
        assert title == f"deep {HOSTILE}"[:400]
    finally:
        browser.quit()


def test_the_judge_audit_and_fig3_read_a_coevol_tree_s_children(tmp_path: Path) -> None:
    """A CoEvol tree's judgments live on its nodes, not in the loop's iterations: the audit counts
    each judged child, and its debates and advice are the turn's iterations for every reader."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "C", "input": "", "output": "never"}])
    out = tmp_path / "out.json"
    responder = TreeResponder(votes, fallback=CoEvolResponder(accept_up_to(0)))
    tree = {"expand": "coevol", "value": "pairwise", "depth": 2}
    with ThreadedServer(responder=responder) as server:
        asyncio.run(refine_file(server.base_url, data, out, strategy="tree", tree=tree))
    (record,) = read_trace(Path(f"{out}.trace.jsonl"))
    assert isinstance(record, TraceRecord)
    turn = record.turns[0]
    assert turn.tree is not None and not turn.iterations  # the loop never ran
    judged = [n.judge for n in turn.tree.nodes if n.judge is not None]
    expanded = [n.iteration for n in turn.tree.nodes if n.iteration is not None]
    assert len(judged) >= 1 and len(expanded) >= 3
    assert list(turn.judgments()) == judged and list(turn.all_iterations()) == expanded
    audit = JudgeAudit()
    audit.add_record(record)
    assert audit.comparisons + audit.unparseable == len(judged)
    assert run(_cli(str(out), "--tokenizer", "words", "--no-directions")) == 0
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["judge"]["comparisons"] == audit.comparisons > 0
    assert report["judge"]["primacy"] == audit.primacy and report["judge"]["recency"] == audit.recency
