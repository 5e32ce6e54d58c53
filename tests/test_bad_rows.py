"""Bad rows go to ``<output>.rejects.jsonl`` with their line number; the good ones are refined as if
the bad ones were not there, and nothing on stderr looks like a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.testing import Fault, FaultKind
from coevol.testing.responders import CoEvolResponder

from .engine_support import ThreadedServer, alpaca_rows, marked, refine_file, run_cli, write_jsonl

GOOD = alpaca_rows(6, seed=9)
HUGE = {"instruction": "Summarise this HUGE document.", "input": "word " * 200, "output": "It is long."}
# (raw line, what the rejects file must say about it)
BAD: list[tuple[str | dict[str, Any], str]] = [
    ('{"instruction": "Finish this", "output": ', "not valid JSON"),
    ({"instruction": "No answer here", "input": ""}, "missing field 'output'"),
    ({"instruction": None, "input": "", "output": "An answer"}, "field 'instruction' is null"),
    ({"instruction": "Count", "input": "", "output": 42}, "non-text content (number)"),
    ({"instruction": "   ", "input": "", "output": "An answer"}, "empty instruction"),
    ({"instruction": "Say something", "input": "", "output": ""}, "empty output"),
    ("[1, 2, 3]", "not a JSON object"),
    (HUGE, "maximum context length"),
]


@pytest.fixture(scope="module")
def server() -> Any:
    # The server says "too long" for any prompt carrying the HUGE row.
    with ThreadedServer(
        responder=CoEvolResponder(), faults=marked("HUGE", Fault(FaultKind.CONTEXT_LENGTH))
    ) as s:
        yield s


def mixed_rows() -> tuple[list[str | dict[str, Any]], dict[int, str]]:
    """Good and bad rows interleaved, and the 1-based line of each bad one with its expected error."""
    rows: list[str | dict[str, Any]] = []
    expected: dict[int, str] = {}
    good = list(GOOD)
    for i, (raw, error) in enumerate(BAD):
        if i % 2 == 0:
            rows.append(good.pop(0))
        rows.append(raw)
        expected[len(rows)] = error
    rows.extend(good)
    return rows, expected


def cli_args(server: ThreadedServer) -> list[str]:
    return ["--base-url", server.base_url, "--model", "fake", "--concurrency", "8"]


def test_every_bad_row_is_rejected_with_its_line_and_the_rest_is_refined(
    server: ThreadedServer, tmp_path: Path
) -> None:
    rows, expected = mixed_rows()
    assert len(rows) == len(GOOD) + len(BAD)
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    out = tmp_path / "out.jsonl"
    done = run_cli("refine", data, "-o", out, *cli_args(server))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert any(line.split()[:2] == ["rejected", "rows"] and line.split()[-1] == str(len(BAD))
               for line in done.stderr.splitlines())  # fmt: skip

    clean = run_cli("refine", write_jsonl(tmp_path / "good.jsonl", GOOD), "-o", tmp_path / "good-out.jsonl",
                    *cli_args(server))  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    # The good rows are refined as if alone; the row too long for the model stays, unchanged, in place.
    written = [json.loads(line) for line in out.read_text().splitlines()]
    alone = [json.loads(line) for line in (tmp_path / "good-out.jsonl").read_text().splitlines()]
    assert [r for r in written if r != HUGE] == alone
    assert [r["instruction"] for r in written] == [
        r["instruction"] for r in rows if isinstance(r, dict) and (r in GOOD or r is HUGE)
    ]

    rejects = [json.loads(line) for line in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == sorted(expected)
    lines = data.read_text().splitlines()
    for reject in rejects:
        assert expected[reject["line"]] in reject["error"]
        assert reject["raw"] == lines[reject["line"] - 1]
    too_long = [r for r in rejects if "HUGE document" in r["raw"]]
    assert len(too_long) == 1 and too_long[0]["error"].startswith("not refined: ")

    # A rerun replays everything: no request, the same files, the rejects not written twice.
    before = server.count()
    again = run_cli("refine", data, "-o", out, *cli_args(server))
    assert again.returncode == 0, again.stderr
    assert server.count() == before
    assert [json.loads(x) for x in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()] == rejects


async def test_bad_elements_of_a_json_array_are_rejected_by_position(
    server: ThreadedServer, tmp_path: Path
) -> None:
    data = tmp_path / "in.json"
    data.write_text(
        json.dumps([GOOD[0], {"instruction": "x", "input": "", "output": None}, GOOD[1], "just text"])
    )
    summary, _ = await refine_file(server.base_url, data, tmp_path / "out.json")
    assert summary.complete and summary.rejected == 2
    assert len(json.loads((tmp_path / "out.json").read_text())) == 2
    rejects = [json.loads(x) for x in (tmp_path / "out.json.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["error"]) for r in rejects] == [
        (2, "field 'output' is null"),
        (4, "row is not a JSON object (string)"),
    ]


async def test_a_clean_rerun_removes_a_stale_rejects_file(server: ThreadedServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stale = tmp_path / "out.jsonl.rejects.jsonl"
    stale.write_text('{"line": 1, "error": "from an older input", "raw": ""}\n')
    summary, _ = await refine_file(server.base_url, write_jsonl(tmp_path / "in.jsonl", GOOD[:2]), out)
    assert summary.complete and summary.rejected == 0
    assert not stale.exists()
