"""Row formats: detection, strict parsing with exact messages, rendering back and converting."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from coevol.domain import Example, Turn
from coevol.errors import ConfigError, DataError
from coevol.io.formats import dataset_info_entry, detect_format, parse_example, render_example

ALPACA_ROW: dict[str, Any] = {
    "id": "a1",
    "instruction": "Add 2 and 3.",
    "input": "Show your work.",
    "output": "2 + 3 = 5.",
    "system": "Be brief.",
    "history": [["Hi", "Hello!"]],
    "source": "synthetic",
}
SHAREGPT_ROW: dict[str, Any] = {
    "id": 7,
    "conversations": [
        {"from": "system", "value": "S"},
        {"from": "human", "value": "Q1"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2"},
        {"from": "gpt", "value": "A2"},
    ],
    "lang": "en",
}
MESSAGES_ROW: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1", "name": "bob"},
        {"role": "assistant", "content": "A1", "weight": 0},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2", "weight": 1},
    ],
    "id": "m9",
}


def parse(obj: Any, fmt: str | None = None, line: int = 3) -> Example:
    return parse_example(obj, fmt, index=0, line=line)


def dumps(obj: Any) -> bytes:
    """Order-sensitive comparison: dict equality ignores key order, the serialized text does not."""
    return orjson.dumps(obj)


def refined(ex: Example) -> list[Turn]:
    return [Turn(t.role, f"{t.content}!" if t.role == "assistant" else t.content, t.input) for t in ex.turns]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"instruction": "q", "output": "a"}, "alpaca"),
        ({"output": "a"}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": [], "id": 1}, "messages"),
        ({"prompt": "q", "completion": "a"}, None),
        ([{"instruction": "q"}], None),
        ("text", None),
    ],
)
def test_detect_format(obj: Any, expected: str | None) -> None:
    assert detect_format(obj) == expected


def test_alpaca_with_and_without_input() -> None:
    ex = parse({"instruction": "Sum.", "input": "1, 2", "output": "3"}, line=5)
    assert (ex.fmt, ex.line, ex.index) == ("alpaca", 5, 0)
    assert ex.turns == [Turn("user", "Sum.", input="1, 2"), Turn("assistant", "3")]
    assert parse({"instruction": "Hi.", "output": "Hello."}).turns[0] == Turn("user", "Hi.", input="")
    assert parse({"instruction": "Hi.", "input": None, "output": "Hello."}).turns[0].input == ""


def test_alpaca_noinput_placeholder_is_kept() -> None:
    ex = parse({"instruction": "Name a color.", "input": "<noinput>", "output": "Blue."})
    assert ex.turns[0] == Turn("user", "Name a color.", input="<noinput>")


def test_alpaca_system_and_history() -> None:
    ex = parse(ALPACA_ROW)
    assert ex.turns == [
        Turn("system", "Be brief."),
        Turn("user", "Hi"),
        Turn("assistant", "Hello!"),
        Turn("user", "Add 2 and 3.", input="Show your work."),
        Turn("assistant", "2 + 3 = 5."),
    ]
    assert ex.raw is ALPACA_ROW


def test_sharegpt_roles_system_and_tools() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "You can call tools."},
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "It is 21 °C."},
            {"from": "user", "value": "Thanks"},
            {"from": "chatgpt", "value": "You're welcome."},
            {"from": "tool", "value": ""},
            {"from": "Model", "value": "Bye."},
        ],
        "tools": "[]",
    }
    ex = parse(row)
    assert ex.fmt == "sharegpt"
    assert [t.role for t in ex.turns] == [
        "system",
        "user",
        "function_call",
        "observation",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert ex.turns[4].content == "It is 21 °C."


def test_sharegpt_top_level_system_column() -> None:
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "Sys"}
    ex = parse(row)
    assert ex.turns == [Turn("system", "Sys"), Turn("user", "q"), Turn("assistant", "a")]
    out = render_example(ex, refined(ex))
    assert dumps(out) == dumps(
        {**row, "conversations": [row["conversations"][0], {"from": "gpt", "value": "a!"}]}
    )


def test_messages_keep_roles_and_extra_keys() -> None:
    ex = parse(MESSAGES_ROW)
    assert ex.fmt == "messages"
    assert [t.role for t in ex.turns] == ["system", "user", "assistant", "user", "assistant"]
    out = render_example(ex, refined(ex))
    expected = copy.deepcopy(MESSAGES_ROW)
    expected["messages"][2]["content"] = "A1!"
    expected["messages"][4]["content"] = "A2!"
    assert dumps(out) == dumps(expected)
    assert MESSAGES_ROW["messages"][2]["content"] == "A1"


BAD_ROWS = [
    ([1, 2], None, "row is not a JSON object (array)"),
    ("x", None, "row is not a JSON object (string)"),
    (
        {"prompt": "q", "completion": "a"},
        None,
        "row matches no known format (alpaca, sharegpt, messages): has keys ['prompt', 'completion']",
    ),
    ({"conversations": []}, "alpaca", "row is in sharegpt format, expected alpaca"),
    ({"output": "a"}, None, "missing field 'instruction'"),
    ({"instruction": "q"}, None, "missing field 'output'"),
    ({"id": 1}, "alpaca", "missing field 'instruction'"),
    ({"instruction": "q", "output": None}, None, "field 'output' is null"),
    ({"instruction": 5, "output": "a"}, None, "field 'instruction' has non-text content (number)"),
    ({"instruction": " \n\t", "output": "a"}, None, "empty instruction"),
    ({"instruction": "q", "output": "  "}, None, "empty output"),
    ({"instruction": "q", "input": ["x"], "output": "a"}, None, "field 'input' has non-text content (array)"),
    ({"instruction": "q", "output": "a", "system": {}}, None, "field 'system' has non-text content (object)"),
    ({"instruction": "q", "output": "a", "history": "h"}, None, "field 'history' is not a list (string)"),
    (
        {"instruction": "q", "output": "a", "history": [["x"]]},
        None,
        "field 'history[0]' is not a [query, response] pair",
    ),
    ({"instruction": "q", "output": "a", "history": [["x", None]]}, None, "field 'history[0][1]' is null"),
    (
        {"instruction": "q", "output": "a", "history": [["x", ""]]},
        None,
        "empty assistant turn at history[0][1]",
    ),
    ({"conversations": None}, None, "field 'conversations' is null"),
    ({"conversations": {"from": "human"}}, None, "field 'conversations' is not a list (object)"),
    ({"conversations": []}, None, "field 'conversations' is empty"),
    (
        {"conversations": [{"from": "human", "value": "q"}, "a"]},
        None,
        "field 'conversations[1]' is not an object (string)",
    ),
    ({"conversations": [{"value": "q"}]}, None, "missing field 'conversations[0].from'"),
    (
        {"conversations": [{"from": None, "value": "q"}]},
        None,
        "field 'conversations[0].from' is not a string (null)",
    ),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]},
        None,
        "field 'conversations[1].value' is null",
    ),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
        None,
        "empty assistant turn at conversations[1]",
    ),
    ({"conversations": [{"from": "human", "value": "q"}]}, None, "conversation has no assistant turn"),
    (
        {"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "a"}]},
        None,
        "conversation has no user turn",
    ),
    ({"messages": [{"role": "user"}]}, None, "missing field 'messages[0].content'"),
    ({"messages": [{"role": "user", "content": ""}]}, None, "empty user turn at messages[0]"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]},
        None,
        "field 'messages[0].content' has non-text content (array)",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}]},
        "sharegpt",
        "row is in messages format, expected sharegpt",
    ),
    ({"instruction": "q", "output": "a"}, "messages", "row is in alpaca format, expected messages"),
]


@pytest.mark.parametrize(("obj", "fmt", "message"), BAD_ROWS)
def test_bad_rows(obj: Any, fmt: str | None, message: str) -> None:
    with pytest.raises(DataError) as info:
        parse(obj, fmt, line=42)
    assert str(info.value) == message
    assert info.value.line == 42


def test_unknown_format_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse({"instruction": "q", "output": "a"}, "openai")


def test_many_keys_are_cut_short() -> None:
    with pytest.raises(DataError, match=r"has keys \['k0', .*'k11', \.\.\.\]$"):
        parse({f"k{i}": i for i in range(20)})


@pytest.mark.parametrize("row", [ALPACA_ROW, SHAREGPT_ROW, MESSAGES_ROW])
def test_render_unchanged_turns_is_identity(row: dict[str, Any]) -> None:
    ex = parse(row)
    assert dumps(render_example(ex, ex.turns)) == dumps(row)
    assert dumps(render_example(ex, ex.turns, ex.fmt)) == dumps(row)


def test_render_replaces_only_assistant_texts() -> None:
    ex = parse(ALPACA_ROW)
    turns = refined(ex)
    turns[3] = Turn("user", "changed by mistake")
    out = render_example(ex, turns)
    assert list(out) == list(ALPACA_ROW)
    assert out == {**ALPACA_ROW, "output": "2 + 3 = 5.!", "history": [["Hi", "Hello!!"]]}
    assert ALPACA_ROW["history"] == [["Hi", "Hello!"]]

    ex = parse(SHAREGPT_ROW)
    out = render_example(ex, refined(ex))
    assert [m["value"] for m in out["conversations"]] == ["S", "Q1", "A1!", "Q2", "A2!"]
    assert list(out) == ["id", "conversations", "lang"]


def test_render_rejects_turns_of_other_roles() -> None:
    ex = parse(SHAREGPT_ROW)
    with pytest.raises(ValueError, match="do not match"):
        render_example(ex, ex.turns[:-1])


SHAREGPT_FROM_ALPACA = {
    "id": "a1",
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Add 2 and 3.\nShow your work."},
        {"from": "gpt", "value": "2 + 3 = 5."},
    ],
    "source": "synthetic",
}
MESSAGES_FROM_ALPACA = {
    "id": "a1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Add 2 and 3.\nShow your work."},
        {"role": "assistant", "content": "2 + 3 = 5."},
    ],
    "source": "synthetic",
}
ALPACA_FROM_SHAREGPT = {
    "id": 7,
    "instruction": "Q2",
    "input": "",
    "output": "A2",
    "system": "S",
    "history": [["Q1", "A1"]],
    "lang": "en",
}
MESSAGES_FROM_SHAREGPT = {
    "id": 7,
    "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ],
    "lang": "en",
}
ALPACA_FROM_MESSAGES = {
    "instruction": "Q2",
    "input": "",
    "output": "A2",
    "system": "S",
    "history": [["Q1", "A1"]],
    "id": "m9",
}
SHAREGPT_FROM_MESSAGES = {"conversations": SHAREGPT_ROW["conversations"], "id": "m9"}


@pytest.mark.parametrize(
    ("row", "out_fmt", "expected"),
    [
        (ALPACA_ROW, "sharegpt", SHAREGPT_FROM_ALPACA),
        (ALPACA_ROW, "messages", MESSAGES_FROM_ALPACA),
        (SHAREGPT_ROW, "alpaca", ALPACA_FROM_SHAREGPT),
        (SHAREGPT_ROW, "messages", MESSAGES_FROM_SHAREGPT),
        (MESSAGES_ROW, "alpaca", ALPACA_FROM_MESSAGES),
        (MESSAGES_ROW, "sharegpt", SHAREGPT_FROM_MESSAGES),
    ],
)
def test_conversions(row: dict[str, Any], out_fmt: str, expected: dict[str, Any]) -> None:
    ex = parse(row)
    out = render_example(ex, ex.turns, out_fmt)
    assert dumps(out) == dumps(expected)
    assert parse(out).fmt == out_fmt


def test_conversion_uses_the_refined_turns() -> None:
    ex = parse({"instruction": "q", "output": "a"})
    out = render_example(ex, refined(ex), "messages")
    assert out == {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a!"}]}


def test_single_turn_to_alpaca_has_no_history_or_system() -> None:
    ex = parse({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert dumps(render_example(ex, ex.turns, "alpaca")) == dumps(
        {"instruction": "q", "input": "", "output": "a"}
    )


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        (
            [("human", "q"), ("function_call", "{}"), ("observation", "{}"), ("gpt", "a")],
            "cannot convert to alpaca: it has no place for 'function_call' turns",
        ),
        (
            [("human", "q"), ("human", "q2"), ("gpt", "a")],
            "cannot convert to alpaca: turns must alternate user/assistant, starting with user and ending "
            "with assistant",
        ),
        (
            [("human", "q"), ("gpt", "a"), ("human", "q2")],
            "cannot convert to alpaca: turns must alternate user/assistant, starting with user and ending "
            "with assistant",
        ),
    ],
)
def test_conversions_alpaca_cannot_hold(conversation: list[tuple[str, str]], message: str) -> None:
    ex = parse({"conversations": [{"from": r, "value": v} for r, v in conversation]}, line=8)
    with pytest.raises(DataError) as info:
        render_example(ex, ex.turns, "alpaca")
    assert (str(info.value), info.value.line) == (message, 8)


def test_dataset_info_entries() -> None:
    assert dataset_info_entry("refined", "refined.json", "alpaca") == {
        "refined": {
            "file_name": "refined.json",
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            },
        }
    }
    assert dataset_info_entry("r", "r.json", "alpaca", present=["instruction", "input", "output"]) == {
        "r": {
            "file_name": "r.json",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }
    assert dataset_info_entry("chat", "chat.jsonl", "sharegpt") == {
        "chat": {
            "file_name": "chat.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
                "system_tag": "system",
            },
        }
    }
    assert dataset_info_entry("m", "m.parquet", "messages", present=["messages", "tools", "id"]) == {
        "m": {
            "file_name": "m.parquet",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "tools": "tools"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
