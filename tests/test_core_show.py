"""``coevol show``: what it prints, in which order, and that nothing from the data can drive the terminal.

A trace is written from a real (in-process) run whose row and model answers carry console markup
and escape sequences (window title, clear screen, OSC 8 hyperlink, a bell); it is rendered on a
forced terminal and on a pipe. Files that are not a trace of this schema give one line.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from coevol.cli.show import CUT_OFF, read_trace, show_trace
from coevol.conversation import ConversationSettings
from coevol.domain import Example, RoleRoute, Turn
from coevol.errors import CoevolError, TraceError
from coevol.loop import LoopSettings
from coevol.multiturn import refine_example
from coevol.prompts.templates import load_prompts
from coevol.testing import Reply

from .conftest import coevol_cli
from .core_support import Agents

PROMPTS = load_prompts()
HOSTILE = (
    "[/b] [link=http://evil.example]x[/link] [bold red]y[/] \x1b]0;title\x07 \x1b[2J \x1b]8;;http://e\x1b\\z"
)
VISIBLE = (
    "[/b] [link=http://evil.example]x[/link] [bold red]y[/] \\e]0;title\\x07 \\e[2J \\e]8;;http://e\\e\\z"
)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def hostile_agents() -> Agents:
    agents = Agents(
        {
            "positive": [f"pos {HOSTILE}"],
            "critical": [f"crt {HOSTILE}", Reply(f"crt cut {HOSTILE}", finish_reason="length")],
            "advisor": [f"1. {HOSTILE}"],
            "editor": [f"Two. {HOSTILE}"],  # iteration 2 repeats it: unchanged, never judged
        }
    )

    def judge(first: str, second: str, attempt: int) -> str:
        if attempt == 0 and second == agents.last_edit:  # forward: unparseable first
            return f"hmm {HOSTILE}"
        return agents.prefers_the_edit(first, second, attempt) + f"\n{HOSTILE}"

    agents.judge = judge
    return agents


async def write_trace(path: Path, count: int = 1) -> Path:
    lines = []
    for i in range(count):
        turns = [Turn("user", f"Q {HOSTILE}", input=f"in {HOSTILE}"), Turn("assistant", f"Nine. {HOSTILE}")]
        example = Example(i, i + 1, "alpaca", turns, {"id": f"{HOSTILE}-{i}"})
        outcome = await refine_example(
            example,
            hostile_agents(),
            PROMPTS,
            LoopSettings(max_rounds=2),
            ConversationSettings(),
            roles={"judge": RoleRoute(f"judge {HOSTILE}", "http://j/v1")},
        )
        lines.append(orjson.dumps(outcome.record.to_dict()) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


def render(path: Path, *, terminal: bool, **kwargs: object) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, force_terminal=terminal, width=250, color_system="truecolor" if terminal else None
    )
    show_trace(path, console=console, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize("terminal", [True, False], ids=["tty", "pipe"])
async def test_hostile_text_is_shown_inert_on_a_tty_and_a_pipe(tmp_path: Path, terminal: bool) -> None:
    out = render(await write_trace(tmp_path / "t.jsonl"), terminal=terminal)
    assert out.count(VISIBLE) >= 10  # instruction, input, responses, debate, advice, judge, role ...
    assert "\x07" not in out
    # The only escape sequences are rich's own colours on a terminal, none at all on a pipe.
    assert SGR.sub("", out).count("\x1b") == 0
    assert ("\x1b[" in out) is terminal


async def test_show_prints_the_sample_before_the_iterations(tmp_path: Path) -> None:
    out = render(await write_trace(tmp_path / "t.jsonl"), terminal=False)
    order = [
        "row 0 (line 1)",
        "judge: judge",
        "assistant turn 1",
        "instruction",
        "input",
        "original response",
        "final response",
        "changes (word diff)",
        "iteration 1",
        "positive debater, stage 1",
        "critical debater, stage 1",
        "positive debater, stage 2",
        f"critical debater, stage 2{CUT_OFF}",
        "advisor: suggestions",
        "editor: edited response",
        "judge (previous first, attempt 2): assistant 2 -> s(previous)=0 s(edited)=1",
        "judge (edited first): assistant 1 -> s(previous)=0 s(edited)=1",
        "average: previous 0 vs edited 1 -> ACCEPTED",
        "iteration 2",
        "the edit equals the previous response: not judged, the previous response stays",
        "stopped: unchanged",
    ]
    positions = [out.index(needle) for needle in order]
    assert positions == sorted(positions)
    assert "[-Nine-]{+Two+}" in out  # the word diff, readable without colours
    assert "refined, 1 accepted edit(s)" in out


async def test_index_finds_the_sample_by_this_runs_index(tmp_path: Path) -> None:
    path = await write_trace(tmp_path / "t.jsonl", count=3)
    out = render(path, terminal=False, indices=[1])
    assert "row 1 (line 2)" in out and "row 0 " not in out and "row 2 " not in out
    assert render(path, terminal=False, limit=2).count("assistant turn 1") == 2
    with pytest.raises(TraceError, match=r"no row with index 7 in "):
        render(path, terminal=False, indices=[7, 1])


V01 = {"index": 0, "line": 1, "status": "kept", "accepted_rounds": 0, "turns": [], "usage": {}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[\n  {"instruction": "a", "output": "b"}\n]\n', "line 1 is not JSON: not a trace file"),
        (b'{"instruction": "a", "input": "", "output": "b"}\n', "line 1 is not a trace record"),
        (orjson.dumps(V01) + b"\n", "no schema field (a coevol 0.1 trace)"),
        (orjson.dumps({**V01, "schema": "coevol.trace/9"}) + b"\n", "schema 'coevol.trace/9'"),
        (
            b"\n\n" + orjson.dumps({**V01, "schema": "coevol.trace/2", "index": "0"}) + b"\n",
            "line 3: malformed",
        ),
        (b"\xff\xfe\x00garbage\n", "not JSON"),
        (b"[" * 5000 + b"\n", "not JSON"),
    ],
)
def test_a_file_that_is_not_a_trace_gives_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "given.json"
    path.write_bytes(content)
    with pytest.raises(TraceError) as info:
        list(read_trace(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, CoevolError)


def test_missing_files_folders_and_hostile_paths_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        list(read_trace(tmp_path / "nope.jsonl"))
    with pytest.raises(TraceError, match="is a folder, not a trace file"):
        list(read_trace(tmp_path))
    with pytest.raises(TraceError) as info:
        list(read_trace(tmp_path / "x\x1b[2J\x07.jsonl"))
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value) and "\\e[2J" in str(info.value)


async def test_the_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    code, out, err = await coevol_cli("show", str(tmp_path / "missing.trace.jsonl"))
    assert code == 1 and "no such trace file" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    path = await write_trace(tmp_path / "t.jsonl", count=2)
    code, out, err = await coevol_cli("show", str(path), "--index", "1")
    assert code == 0, err
    assert "row 1 (line 2)" in out and "row 0 " not in out and "\x1b]" not in out
