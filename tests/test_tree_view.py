"""``coevol show`` for a tree run: the compact tree (depth, value, path) as exact lines, inert."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson
from rich.console import Console

from coevol.cli.show import show_trace
from coevol.conversation import ConversationSettings
from coevol.domain import Example, TraceRecord, TreeNodeTrace, TreeTrace, Turn
from coevol.loop import LoopSettings
from coevol.multiturn import refine_example
from coevol.prompts.templates import load_prompts
from coevol.testing.tree import Label, TreeResponder
from coevol.tree.settings import TreeSettings
from coevol.tree.view import tree_lines


def second_level(response: str) -> list[list[Label]]:
    if response.count("|") == 2:
        return [["Yes", "Yes", "Yes", "No", None]]
    return [["No"] * 5]


def refine(parent: str, seed: int, nth: int) -> str:
    return f"{parent}|{nth % 3}"  # children 0, 1, 2 of each parent, in the order they were asked


def test_the_tree_in_a_few_lines() -> None:
    settings = LoopSettings(tree=TreeSettings(depth=2))
    example = Example(0, 1, "alpaca", [Turn("user", "Say hi."), Turn("assistant", "hello")], {})
    responder = TreeResponder(second_level, refine)
    outcome = asyncio.run(
        refine_example(example, responder.as_generate(), load_prompts(), settings, ConversationSettings())
    )
    tree = outcome.record.turns[0].tree
    assert tree is not None
    assert tree_lines(tree) == [
        "tree: bfs, branch 3, keep 2, depth 2, gate 0.5; spar children, critic value; 10 node(s), "
        "depth reached 2; path #0 > #2 > #9",
        "#0 d0 V=0.00 0/5 yes [*path; kept] 'hello'",
        "  #1 d1 V=0.00 0/5 yes 'hello|0'",
        "  #2 d1 V=0.00 0/5 yes [*path; kept] 'hello|1'",
        "    #7 d2 V=0.75 3/4 yes 'hello|1|0'",
        "    #8 d2 V=0.75 3/4 yes 'hello|1|1'",
        "    #9 d2 V=0.75 3/4 yes [*path] 'hello|1|2'",
        "  #3 d1 V=0.00 0/5 yes [kept] 'hello|2'",
        "    #4 d2 V=0.75 3/4 yes 'hello|2|0'",
        "    #5 d2 V=0.75 3/4 yes 'hello|2|1'",
        "    #6 d2 V=0.75 3/4 yes 'hello|2|2'",
    ]
    assert outcome.turns[1].content == "hello|1|2"  # all six tie at 0.75: the later node is written


def test_drops_copies_and_a_looping_hand_edited_tree() -> None:
    tree = TreeTrace(
        {"algorithm": "dfs"},
        [
            TreeNodeTrace(0, 0, 0, "x\x1b[2J", value=0.0),  # its own parent: never descended into
            TreeNodeTrace(1, 0, 1, None, dropped="the refiner gave no output"),
            TreeNodeTrace(2, 0, 1, "x\x1b[2J", value=0.0, same_as=0),
        ],
    )
    lines = tree_lines(tree)
    assert lines[1:] == [
        "#0 d0 V=0.00 'x\\x1b[2J'",
        "  #1 d1 V=  -   [dropped: the refiner gave no output] (no response)",
        "  #2 d1 V=0.00 [same as #0] 'x\\x1b[2J'",
    ]


def test_show_prints_the_tree_inert(tmp_path: Path) -> None:
    settings = LoopSettings(tree=TreeSettings(depth=1))
    hostile = "hi \x1b]0;title\x07 [b]bold[/b]"
    example = Example(0, 1, "alpaca", [Turn("user", "Say hi."), Turn("assistant", hostile)], {})
    responder = TreeResponder(lambda r: [["No"] * 5])
    outcome = asyncio.run(
        refine_example(example, responder.as_generate(), load_prompts(), settings, ConversationSettings())
    )
    path = tmp_path / "t.jsonl"
    path.write_bytes(orjson.dumps(outcome.record.to_dict()) + b"\n")
    assert TraceRecord.from_dict(orjson.loads(path.read_bytes())) == outcome.record
    buffer = io.StringIO()
    show_trace(path, console=Console(file=buffer, width=250, color_system=None))
    out = buffer.getvalue()
    assert "tree: bfs, branch 3, keep 2, depth 1" in out and "path #0 > #3" in out
    assert "stopped: tree_no_pass (no node passed the gate; the original stays)" in out
    assert "\x1b" not in out and "\x07" not in out and "[b]bold[/b]" in out
