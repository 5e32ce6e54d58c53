"""End to end over loopback HTTP: unusable and unchanged edits through the CLI, the store and show.

The fake server's editor answers row by row with a cut-off edit, one that is empty once its echoed
header is dropped, and the response unchanged (an answer with no text at all is a failed call:
``test_core_loop``); its judge always prefers the edit. Nothing may be judged or written, the trace keeps
each call's finish reason, a rerun replays the same files from the store, and ``coevol show``
explains each stop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coevol.testing import CoEvolResponder, FakeOpenAIServer, Reply, identify_role

from .conftest import coevol_cli, read_jsonl
from .core_support import presented

ROWS = [
    {"id": "cut", "instruction": "Name a prime number.", "input": "", "output": "Nine."},
    {"id": "empty", "instruction": "Name a colour.", "input": "", "output": "Loud."},
    {"id": "same", "instruction": "Name a planet.", "input": "", "output": "Mars."},
]
EDITS: dict[str, str | Reply] = {
    "Name a prime number.": Reply("Two is the only even prime, and", finish_reason="length"),
    "Name a colour.": "### Response:\n   \n",
    "Name a planet.": "### Response:\n  Mars.",
}


def responder(body: dict[str, Any]) -> str | Reply:
    messages = body["messages"]
    role = identify_role(messages)
    if role == "editor":
        return next(edit for instruction, edit in EDITS.items() if instruction in messages[-1]["content"])
    if role == "judge":  # careless: always the response that is not the original
        first, _ = presented(messages)
        return "<assistant 1>" if first not in {r["output"] for r in ROWS} else "<assistant 2>"
    return CoEvolResponder()(body)


async def test_unusable_and_unchanged_edits_are_never_judged_written_or_lost(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out.jsonl"
    args = ("refine", str(src), "-o", str(out), "--model", "m", "-q")
    async with FakeOpenAIServer(responder) as server:
        code, _, err = await coevol_cli(*args, "--base-url", server.base_url)
        assert code == 0, err
        roles = [identify_role(r.body["messages"]) for r in server.requests]
        assert "judge" not in roles and len(roles) == 6 * len(ROWS)
        first = (out.read_bytes(), Path(f"{out}.trace.jsonl").read_bytes())
        code, _, err = await coevol_cli(*args, "--base-url", server.base_url)
        assert code == 0, err
        assert len(server.requests) == 6 * len(ROWS)  # the rerun replays every sample
    assert (out.read_bytes(), Path(f"{out}.trace.jsonl").read_bytes()) == first

    assert [json.loads(line) for line in out.read_text().splitlines()] == ROWS
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [t["status"] for t in trace] == ["kept"] * 3
    turns = [t["turns"][0] for t in trace]
    assert [t["stop_reason"] for t in turns] == ["edit_unusable", "edit_unusable", "unchanged"]
    assert [t["final"] for t in turns] == [r["output"] for r in ROWS]
    edits = [t["iterations"][0]["edit"] for t in turns]
    assert edits[0] == {"text": "Two is the only even prime, and", "finish_reason": "length"}
    assert [e["finish_reason"] for e in edits[1:]] == ["stop", "stop"]
    debate = turns[0]["iterations"][0]["debate"]
    assert {d["finish_reason"] for d in debate.values()} == {"stop"}

    code, shown, err = await coevol_cli("show", f"{out}.trace.jsonl")
    assert code == 0, err
    assert "editor: edited response (cut off: max_tokens reached)" in shown
    assert "the edit was cut off at max_tokens: not judged" in shown
    assert "the edit was empty: not judged" in shown
    assert "the edit equals the previous response: not judged" in shown
