"""``--pairs``: one preference record per accepted edit, in TRL's conversational DPO shape.

TRL's DPO trainer reads ``prompt`` (a list of ``{role, content}`` messages ending with the user turn
to answer), ``chosen`` and ``rejected`` (each a list holding one assistant message). trl itself is not
installed here (it needs torch), so these tests check those conventions on the written file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

from .conftest import coevol_cli, read_jsonl

FORWARD_WINS_EDIT = {
    "order": "forward",
    "verdict": "assistant 2",
    "scores": {"previous": 0.0, "edited": 1.0},
    "attempts": [
        {
            "text": "<assistant 2>\nAlthough <assistant 1> is longer, Assistant 2 is more accurate.",
            "finish_reason": "stop",
        }
    ],
    "error": None,
}
REVERSE_WINS_EDIT = {
    "order": "reverse",
    "verdict": "assistant 1",
    "scores": {"previous": 0.0, "edited": 1.0},
    "attempts": [
        {
            "text": "<assistant 1>\nAlthough <assistant 2> is longer, Assistant 1 is more accurate.",
            "finish_reason": "stop",
        }
    ],
    "error": None,
}


def assert_trl_conversational(record: dict[str, Any]) -> None:
    """The conventions of TRL's preference datasets, conversational format."""
    assert {"prompt", "chosen", "rejected"} <= set(record)
    prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
    assert isinstance(prompt, list) and prompt
    for message in prompt:
        assert set(message) == {"role", "content"}
        assert message["role"] in ("system", "user", "assistant")
        assert isinstance(message["content"], str) and message["content"]
    assert prompt[-1]["role"] == "user"
    for answer in (chosen, rejected):
        assert isinstance(answer, list) and len(answer) == 1
        assert set(answer[0]) == {"role", "content"} and answer[0]["role"] == "assistant"
        assert isinstance(answer[0]["content"], str)
    assert chosen != rejected


def pair(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "judge": [FORWARD_WINS_EDIT, REVERSE_WINS_EDIT],
    }


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


async def run(
    tmp_path: Path, rows: list[dict[str, Any]], accept: int, *flags: str, pairs_name: str = "pairs.jsonl"
) -> tuple[Path, FakeOpenAIServer]:
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out.jsonl"
    pairs = tmp_path / pairs_name
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(accept))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--pairs", str(pairs), "--base-url", server.base_url,
            "--model", "m", "-q", *flags,
        )  # fmt: skip
        assert code == 0, err
        assert f"pairs: {pairs}" in " ".join(err.split())
    return pairs, server


SINGLE = [
    {"id": "s1", "instruction": "Name a prime number.", "input": "", "output": "9"},
    {"id": "s2", "instruction": "Name a colour.", "output": "Blue"},
]


async def test_single_turn_one_record_per_accepted_edit(tmp_path: Path) -> None:
    pairs, _ = await run(tmp_path, SINGLE, 2)
    records = read_jsonl(pairs)
    # K = 3, the judge accepts two edits per sample: two records each, in input then iteration order.
    assert records == [
        pair([user("Name a prime number.")], "9" + EDIT_MARK, "9"),
        pair([user("Name a prime number.")], "9" + EDIT_MARK * 2, "9" + EDIT_MARK),
        pair([user("Name a colour.")], "Blue" + EDIT_MARK, "Blue"),
        pair([user("Name a colour.")], "Blue" + EDIT_MARK * 2, "Blue" + EDIT_MARK),
    ]
    for record in records:
        assert_trl_conversational(record)
        assert list(record) == ["prompt", "chosen", "rejected", "judge"]


async def test_alpaca_input_is_folded_into_the_prompt_like_a_conversion(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Translate to French.", "input": "I miss you", "output": "Tu me manques"},
        {"instruction": "Name a prime number.", "input": "<noinput>", "output": "7"},
    ]
    records = read_jsonl((await run(tmp_path, rows, 1))[0])
    assert [r["prompt"] for r in records] == [
        [user("Translate to French.\nI miss you")],  # as --output-format messages writes it
        [user("Name a prime number.")],  # a placeholder is no input
    ]


CONVERSATION = {
    "id": "c1",
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Q1"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2"},
        {"from": "gpt", "value": "A2"},
        {"from": "human", "value": "Q3"},
        {"from": "gpt", "value": "A3"},
        {"from": "human", "value": "Q4"},
        {"from": "gpt", "value": "A4"},
    ],
}


async def test_multi_turn_prompts_carry_the_whole_refined_history(tmp_path: Path) -> None:
    pairs, _ = await run(tmp_path, [CONVERSATION], 1)
    records = read_jsonl(pairs)
    system = {"role": "system", "content": "Be brief."}

    def assistant(n: int) -> dict[str, str]:
        return {"role": "assistant", "content": f"A{n}{EDIT_MARK}"}

    # The agents see a 3-round window; the training prompt is the whole conversation so far, with
    # the earlier answers as refined.
    assert records == [
        pair([system, user("Q1")], "A1" + EDIT_MARK, "A1"),
        pair([system, user("Q1"), assistant(1), user("Q2")], "A2" + EDIT_MARK, "A2"),
        pair(
            [system, user("Q1"), assistant(1), user("Q2"), assistant(2), user("Q3")], "A3" + EDIT_MARK, "A3"
        ),
        pair(
            [
                system,
                user("Q1"),
                assistant(1),
                user("Q2"),
                assistant(2),
                user("Q3"),
                assistant(3),
                user("Q4"),
            ],
            "A4" + EDIT_MARK,
            "A4",
        ),
    ]
    for record in records:
        assert_trl_conversational(record)


async def test_only_accepted_edits_make_records(tmp_path: Path) -> None:
    # Turn 1 accepts, turn 2 would too; with max 1 turn refined, only turn 1 gives a record.
    pairs, _ = await run(tmp_path, [CONVERSATION], 1, "--max-turns", "1")
    assert [r["chosen"][0]["content"] for r in read_jsonl(pairs)] == ["A1" + EDIT_MARK]


@pytest.mark.parametrize(
    ("accept", "flags"),
    [
        (0, []),  # every edit rejected
        (3, ["--mode", "advise"]),  # an ablation has no judge, so no preference
        (3, ["--mode", "edit"]),
    ],
)
async def test_no_accepted_edit_no_records(tmp_path: Path, accept: int, flags: list[str]) -> None:
    pairs, _ = await run(tmp_path, SINGLE, accept, *flags)
    assert pairs.read_text() == ""


async def test_score_judge_records_its_scores(tmp_path: Path) -> None:
    pairs, _ = await run(tmp_path, SINGLE[:1], 1, "--judge", "score")
    [record] = read_jsonl(pairs)
    assert_trl_conversational(record)
    assert [(o["order"], o["verdict"], o["scores"]) for o in record["judge"]] == [
        ("forward", "4 8", {"previous": 4.0, "edited": 8.0}),
        ("reverse", "8 4", {"previous": 4.0, "edited": 8.0}),
    ]


async def test_json_pairs_file_and_replay_from_the_store(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "data.jsonl", SINGLE)
    pairs = tmp_path / "pairs.json"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        args = [
            "refine", str(src), "-o", str(tmp_path / "out.jsonl"), "--pairs", str(pairs),
            "--base-url", server.base_url, "--model", "m", "-q",
        ]  # fmt: skip
        code, _, err = await coevol_cli(*args)
        assert code == 0, err
        first = pairs.read_bytes()
        sent = len(server.requests)
        pairs.unlink()
        code, _, err = await coevol_cli(*args)
        assert code == 0, err
        assert len(server.requests) == sent  # every sample replayed from the store, pairs included
    assert pairs.read_bytes() == first
    assert [r["chosen"][0]["content"] for r in json.loads(first)] == ["9" + EDIT_MARK, "Blue" + EDIT_MARK]
