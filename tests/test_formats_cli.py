"""Dataset formats end to end: a real ``coevol refine`` process against the fake server.

With a judge that never accepts an edit the written file must be the input file again, row for row
(same order, ids, extra fields, key order); ``--output-format`` converts; bad rows become rejects that
name their line; file-level problems name the file.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from coevol.domain import Example
from coevol.errors import DataError
from coevol.io.formats import render_example
from coevol.io.readers import parquet_schema, read_examples
from coevol.io.writers import RowWriter
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

from .conftest import coevol_cli, read_jsonl
from .optional import pyarrow


def write_rows(path: Path, rows: list[Any]) -> Path:
    """``.jsonl``: one row a line; ``.json``: an indented array; ``.parquet``: pyarrow's inference."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    else:
        pa, pq = pyarrow()
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    elif path.suffix == ".json":
        rows = json.loads(path.read_text("utf-8"))
    else:
        _, pq = pyarrow()
        rows = pq.read_table(path).to_pylist()
    return rows


def ordered(rows: list[Any]) -> str:
    """Key order matters: dict equality ignores it, the serialized text does not."""
    return json.dumps(rows, ensure_ascii=False)


ALPACA: list[dict[str, Any]] = [
    {"id": "a1", "instruction": "Add 2 and 3.", "input": "", "output": "5", "source": "synthetic"},
    {
        "instruction": "Translate to French.",
        "id": "a2",
        "input": "I miss you",
        "output": "Tu me manques",
        "meta": {"votes": [1, 2], "lang": "fr"},
    },
    {
        "id": "a3",
        "instruction": "And now twice that?",
        "input": "<noinput>",
        "output": "10",
        "system": "Be brief.",
        "history": [["Add 2 and 3.", "5"]],
        "score": 0.5,
    },
]
SHAREGPT: list[dict[str, Any]] = [
    {
        "id": 7,
        "conversations": [
            {"from": "system", "value": "You can call tools."},
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "It is 21 °C.", "markdown": False},
            {"from": "human", "value": "Thanks"},
            {"from": "gpt", "value": "You're welcome."},
        ],
        "tools": '[{"name": "weather"}]',
        "lang": "en",
    },
    {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
        "system": "Answer in English.",
        "id": 8,
        "lang": "en",
    },
]
MESSAGES: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q1", "name": "bob"},
            {"role": "assistant", "content": "A1", "weight": 0},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2", "weight": 1},
        ],
        "id": "m1",
    },
    {
        "id": "m2",
        "messages": [
            {"role": "user", "content": "What is 6 x 7?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": "6 x 7 = 42."},
        ],
        "tools": [{"type": "function", "function": {"name": "multiply"}}],
    },
]
PARQUET_ROWS = [
    {"id": i, "messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
    for i in range(5)
]


async def refine(
    src: Path, out: Path, *args: str, accept: int = 0, expect_requests: int | None = None
) -> tuple[str, FakeOpenAIServer]:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(accept))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q", *args
        )
        assert code == 0, err
        if expect_requests is not None:
            assert len(server.requests) == expect_requests
    return err, server


@pytest.mark.parametrize(
    ("name", "rows", "turns"),
    [
        ("data.json", ALPACA, 4),  # a3 has one history turn: 2 assistant turns
        ("data.jsonl", ALPACA, 4),
        ("chat.jsonl", SHAREGPT, 3),
        ("chat.json", SHAREGPT, 3),
        ("msgs.jsonl", MESSAGES, 3),  # the tool-call-only assistant turn is not refined
        ("msgs.parquet", PARQUET_ROWS, 5),
        ("tools.parquet", MESSAGES, 3),  # struct fields absent from a message come back as nulls
        ("alpaca.parquet", ALPACA[:2], 2),
    ],
)
async def test_round_trip_without_accepted_edits_gives_the_input_back(
    tmp_path: Path, name: str, rows: list[dict[str, Any]], turns: int
) -> None:
    src = write_rows(tmp_path / name, rows)
    out = tmp_path / "out" / f"refined{src.suffix}"
    out.parent.mkdir()
    # One rejected iteration (8 requests) per refined assistant turn.
    await refine(src, out, expect_requests=8 * turns)
    assert not (tmp_path / "out" / f"refined{src.suffix}.rejects.jsonl").exists()
    if src.suffix == ".parquet":
        _, pq = pyarrow()
        assert pq.read_table(out).equals(pq.read_table(src))
        assert pq.read_table(out).schema.equals(pq.read_table(src).schema)
    assert ordered(read_rows(out)) == ordered(read_rows(src))
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [t["status"] for t in trace] == ["kept"] * len(rows)
    assert sum(len(t["turns"]) for t in trace) == turns


async def test_accepted_edits_change_only_assistant_texts(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "msgs.jsonl", MESSAGES)
    out = tmp_path / "refined.jsonl"
    await refine(src, out, accept=1, expect_requests=16 * 3)
    expected = copy.deepcopy(MESSAGES)
    for row in expected:
        for m in row["messages"]:
            if m["role"] == "assistant" and m["content"]:
                m["content"] += EDIT_MARK
    assert ordered(read_rows(out)) == ordered(expected)


async def test_alpaca_history_answers_are_refined_in_place(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "data.json", ALPACA[2:])
    out = tmp_path / "refined.json"
    await refine(src, out, accept=1, expect_requests=2 * 16)
    assert ordered(read_rows(out)) == ordered(
        [{**ALPACA[2], "output": "10" + EDIT_MARK, "history": [["Add 2 and 3.", "5" + EDIT_MARK]]}]
    )


async def test_dataset_info_names_columns_that_only_later_rows_have(tmp_path: Path) -> None:
    first = {k: v for k, v in SHAREGPT[1].items() if k != "system"} | {"id": 9}  # no system column
    rows = [first, SHAREGPT[1]]
    src = write_rows(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "refined.jsonl"
    await refine(src, out)
    entry = json.loads(Path(f"{out}.dataset_info.json").read_text())["refined"]
    assert entry["columns"] == {"messages": "conversations", "system": "system"}


async def test_output_format_converts(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "data.json", ALPACA)
    out = tmp_path / "refined.jsonl"
    await refine(src, out, "--output-format", "messages", accept=1)
    assert ordered(read_rows(out)) == ordered(
        [
            {
                "id": "a1",
                "messages": [
                    {"role": "user", "content": "Add 2 and 3."},
                    {"role": "assistant", "content": "5" + EDIT_MARK},
                ],
                "source": "synthetic",
            },
            {  # the new format keys go where the first of the old ones was
                "messages": [
                    {"role": "user", "content": "Translate to French.\nI miss you"},
                    {"role": "assistant", "content": "Tu me manques" + EDIT_MARK},
                ],
                "id": "a2",
                "meta": {"votes": [1, 2], "lang": "fr"},
            },
            {
                "id": "a3",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Add 2 and 3."},
                    {"role": "assistant", "content": "5" + EDIT_MARK},
                    # "<noinput>" means no input: it is not folded into the user message.
                    {"role": "user", "content": "And now twice that?"},
                    {"role": "assistant", "content": "10" + EDIT_MARK},
                ],
                "score": 0.5,
            },
        ]
    )
    info = json.loads(Path(f"{out}.dataset_info.json").read_text())
    assert info == {
        "refined": {
            "file_name": "refined.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


async def test_sharegpt_to_alpaca_rejects_what_alpaca_cannot_hold(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "chat.jsonl", SHAREGPT)
    out = tmp_path / "refined.json"
    err, _ = await refine(src, out, "--output-format", "alpaca")
    # Row 1 has tool turns, which alpaca has no place for; row 2 converts (its system column kept).
    assert ordered(read_rows(out)) == ordered(
        [
            {
                "instruction": "Hi",
                "input": "",
                "output": "Hello!",
                "system": "Answer in English.",
                "id": 8,
                "lang": "en",
            }
        ]
    )
    rejects = read_jsonl(Path(f"{out}.rejects.jsonl"))
    assert [(r["line"], r["error"]) for r in rejects] == [
        (1, "cannot convert to alpaca: it has no place for 'function_call' turns")
    ]
    assert json.loads(rejects[0]["raw"]) == SHAREGPT[0]
    assert re.search(r"rejected rows +1\b", err)
    # The unconvertible row counts once, as rejected, not also as refined or kept.
    refined = re.search(r"refined \(>= 1 accepted edit\) +(\d+)", err)
    kept = re.search(r"kept as they were +(\d+)", err)
    assert refined and kept and int(refined.group(1)) + int(kept.group(1)) == 1
    info = json.loads(Path(f"{out}.dataset_info.json").read_text())
    assert info == {
        "refined": {
            "file_name": "refined.json",
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
            },
        }
    }


async def test_messages_to_sharegpt_and_the_llama_factory_entry(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "msgs.jsonl", MESSAGES[:1])
    out = tmp_path / "chat.parquet"
    await refine(src, out, "--output-format", "sharegpt")
    assert read_rows(out) == [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q1"},
                {"from": "gpt", "value": "A1"},
                {"from": "human", "value": "Q2"},
                {"from": "gpt", "value": "A2"},
            ],
            "id": "m1",
        }
    ]
    info = json.loads(Path(f"{out}.dataset_info.json").read_text())
    assert info == {
        "chat": {
            "file_name": "chat.parquet",
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


async def test_alpaca_dataset_info_lists_only_present_columns(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "data.jsonl", [{"instruction": "q", "output": "a"}])
    out = tmp_path / "sft.jsonl"
    await refine(src, out)
    assert json.loads(Path(f"{out}.dataset_info.json").read_text()) == {
        "sft": {
            "file_name": "sft.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "response": "output"},
        }
    }


async def test_rows_that_match_no_format_are_rejects_naming_their_line(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"prompt": "q", "completion": "a"}),
        json.dumps(ALPACA[0]),
        "",  # a blank line is skipped but still counts for line numbers
        '{"instruction": "broken"',
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        json.dumps({"instruction": "q", "output": None}),
        json.dumps({"prompt": "q", "completion": "a"}),
        json.dumps(ALPACA[1]),
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "refined.jsonl"
    err, _ = await refine(src, out, expect_requests=2 * 8)
    assert read_rows(out) == [ALPACA[0], ALPACA[1]]
    rejects = read_jsonl(Path(f"{out}.rejects.jsonl"))
    assert [(r["line"], r["error"]) for r in rejects] == [
        (1, "row matches no known format (alpaca, sharegpt, messages): has keys ['prompt', 'completion']"),
        (4, "not valid JSON: unexpected end of data: line 1 column 25 (char 24)"),
        # The first good row fixed the format: later rows are read as alpaca.
        (5, "row is in sharegpt format, expected alpaca"),
        (6, "field 'output' is null"),
        (7, "missing field 'instruction'"),
    ]
    assert rejects[0]["raw"] == lines[0]
    assert rejects[1]["raw"] == lines[3]
    assert re.search(r"rejected rows +5\b", err)
    assert f"rejects: {out}.rejects.jsonl" in " ".join(err.split())


async def test_format_flag_forces_the_format(tmp_path: Path) -> None:
    """Every row of another format: no usable row, refused before anything is written (issue 17;
    this run wrote an empty output and exited 0 before)."""
    src = write_rows(tmp_path / "data.json", ALPACA[:2])
    out = tmp_path / "refined.json"
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q",
            "--format", "sharegpt",
        )  # fmt: skip
        assert len(server.requests) == 0
    assert code == 1
    assert "no usable row: all 2 rows were rejected (the first, line 1: row is in alpaca format, " in err
    assert "expected sharegpt)" in err and not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.txt", "{}", "cannot tell the file format from the suffix '.txt'"),
        ("data.json", '"just a string"', "the top-level JSON value is not an array of rows"),
        ("data.json", '{"instruction": "q",\n "output": "a"}', "not a JSON array and not JSON Lines"),
        ("data.parquet", "not parquet", "not a readable Parquet file"),
    ],
)
async def test_file_level_errors_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q"
        )
        assert server.requests == []
    assert code == 1
    flat = " ".join(err.split())  # rich wraps long lines
    assert f"error: {src}: {message}" in flat
    assert "Traceback" not in err
    assert not out.exists()


# -- Parquet column types ------------------------------------------------------------------------


def typed_table() -> Any:
    pa, _ = pyarrow()
    return pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "instruction": pa.array(["Name a prime.", "Name a colour."], pa.large_string()),
            "output": ["7", "Blue"],
            "tags": pa.array([None, None], pa.list_(pa.string())),  # all null: inference would say "null"
        }
    )


def test_parquet_schema_of_an_input(tmp_path: Path) -> None:
    _, pq = pyarrow()
    src = tmp_path / "typed.parquet"
    pq.write_table(typed_table(), src)
    assert parquet_schema(src).equals(typed_table().schema)
    assert parquet_schema(write_rows(tmp_path / "d.jsonl", ALPACA)) is None
    assert parquet_schema(tmp_path / "missing.parquet") is None


def test_writing_with_the_input_schema_keeps_column_types(tmp_path: Path) -> None:
    _, pq = pyarrow()
    src = tmp_path / "typed.parquet"
    pq.write_table(typed_table(), src)
    out = tmp_path / "out.parquet"
    with RowWriter(out, parquet_schema=parquet_schema(src)) as writer:
        for ex in read_examples(src):
            assert isinstance(ex, Example)
            writer.write(render_example(ex, ex.turns))
    assert pq.read_table(out).equals(typed_table())


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": 1, "output": "a", "new": 1}, "do not fit the given Parquet schema (fields it lacks: new)"),
        (
            {"id": 1, "meta": {"a": 1, "b": [{"c": 1, "d": 2}]}},
            "do not fit the given Parquet schema (fields it lacks: meta.b[].d)",
        ),
        ({"id": "one"}, "do not fit the Parquet schema: Could not convert 'one'"),
        ({"id": 2**40}, "do not fit the Parquet schema: Value 1099511627776 too large"),
    ],
)
def test_rows_that_do_not_fit_a_given_schema_are_never_cut(
    tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    pa, _ = pyarrow()
    schema = pa.schema(
        [
            ("id", pa.int32()),
            ("output", pa.string()),
            ("meta", pa.struct([("a", pa.int64()), ("b", pa.list_(pa.struct([("c", pa.int64())])))])),
        ]
    )
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError) as info, RowWriter(out, parquet_schema=schema) as writer:
        writer.write(row)
    assert str(info.value).startswith(f"{out}: output rows 1..1 {message}")
    assert not out.exists()


async def test_cli_parquet_round_trip_keeps_column_types(tmp_path: Path) -> None:
    pa, pq = pyarrow()
    src = tmp_path / "typed.parquet"
    pq.write_table(typed_table(), src)
    out = tmp_path / "out.parquet"
    await refine(src, out, accept=1)
    expected = typed_table().set_column(2, "output", pa.array(["7" + EDIT_MARK, "Blue" + EDIT_MARK]))
    assert pq.read_table(out).equals(expected)
