"""Streaming reads, ordered atomic writes, rejects and trace files."""

from __future__ import annotations

import random
import sys
import tracemalloc
import types
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coevol.domain import BadRow, Example
from coevol.errors import ConfigError, DataError, MissingExtra
from coevol.io import files
from coevol.io.files import JsonlAppender, OrderedWriter, RejectsWriter, count_rows, read_examples
from coevol.io.formats import render_example

ALPACA = [
    {"id": 0, "instruction": "Add 2 and 3.", "input": "", "output": "5", "meta": {"src": "x"}},
    {"instruction": "Translate «été».", "input": "<noinput>", "output": "summer", "id": 1},
    {"id": 2, "instruction": "q", "output": "a", "system": "Be kind.", "history": [["hi", "hello"]]},
]
SHAREGPT = [
    {
        "id": "s0",
        "conversations": [
            {"from": "system", "value": "Tools: weather"},
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "weather"}'},
            {"from": "observation", "value": '{"t": 21}'},
            {"from": "gpt", "value": "21 °C", "weight": 1},
        ],
        "tools": "[]",
    },
    {"id": "s1", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
]
MESSAGES = [
    {
        "messages": [{"role": "user", "content": "q", "name": "u1"}, {"role": "assistant", "content": "a"}],
        "n": 1,
    },
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 0.5},
        ],
        "n": 2,
    },
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def examples(items: list[Example | BadRow]) -> list[Example]:
    assert all(isinstance(i, Example) for i in items), items
    return [i for i in items if isinstance(i, Example)]


def refine_copy(path: Path, out: Path, out_fmt: str | None = None) -> None:
    """What the engine does, minus the models: read, render with the same turns, write in order."""
    with OrderedWriter(out) as writer:
        for item in read_examples(path):
            assert isinstance(item, Example), item
            writer.submit(item.index, render_example(item, item.turns, out_fmt))


def test_jsonl_good_bad_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"instruction": "q1", "output": "a1"}\n'
        b"\n"
        b"   \r\n"
        b'{"instruction": "q2", "output": \n'
        b'{"instruction": "q3", "output": null}\r\n'
        b"[1]\n"
        b'{"instruction": "q4", "output": "a4"}'
    )
    items = list(read_examples(path))
    assert [(type(i).__name__, i.line) for i in items] == [
        ("Example", 1),
        ("BadRow", 4),
        ("BadRow", 5),
        ("BadRow", 6),
        ("Example", 7),
    ]
    first, bad_json, null, not_object, last = items
    assert isinstance(first, Example) and isinstance(last, Example)
    assert (first.index, last.index) == (0, 4)
    assert last.turns[1].content == "a4"
    assert bad_json == BadRow(
        4,
        "not valid JSON: unexpected end of data: line 1 column 33 (char 32)",
        '{"instruction": "q2", "output": ',
    )
    assert null == BadRow(5, "field 'output' is null", '{"instruction": "q3", "output": null}')
    assert not_object == BadRow(6, "row is not a JSON object (array)", "[1]")


def test_format_is_fixed_by_the_first_good_row(tmp_path: Path) -> None:
    rows = [
        {"conversations": []},
        {"instruction": "q", "output": "a"},
        SHAREGPT[1],
        {"instruction": "q2", "output": "a2"},
    ]
    items = list(read_examples(write_jsonl(tmp_path / "mix.jsonl", rows)))
    assert [i.error if isinstance(i, BadRow) else i.fmt for i in items] == [
        "field 'conversations' is empty",
        "alpaca",
        "row is in sharegpt format, expected alpaca",
        "alpaca",
    ]
    forced = list(read_examples(tmp_path / "mix.jsonl", fmt="sharegpt"))
    assert [i.error if isinstance(i, BadRow) else i.fmt for i in forced] == [
        "field 'conversations' is empty",
        "row is in alpaca format, expected sharegpt",
        "sharegpt",
        "row is in alpaca format, expected sharegpt",
    ]


@pytest.mark.parametrize("rows", [ALPACA, SHAREGPT, MESSAGES], ids=["alpaca", "sharegpt", "messages"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_round_trip_keeps_rows_identical(tmp_path: Path, rows: list[dict[str, Any]], suffix: str) -> None:
    src = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), src)
        rows = pq.read_table(src).to_pylist()
    else:
        write_jsonl(src, rows)
    out = tmp_path / f"out{suffix}"
    refine_copy(src, out)
    again = [i.raw for i in examples(list(read_examples(out)))]
    assert orjson.dumps(again) == orjson.dumps(rows)
    if suffix == ".jsonl":
        assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    ("rows", "out_fmt"),
    [(ALPACA, "sharegpt"), (ALPACA, "messages"), (SHAREGPT[1:], "alpaca"), (MESSAGES, "sharegpt")],
)
def test_conversion_through_files(tmp_path: Path, rows: list[dict[str, Any]], out_fmt: str) -> None:
    out = tmp_path / "out.json"
    refine_copy(write_jsonl(tmp_path / "in.jsonl", rows), out, out_fmt)
    converted = examples(list(read_examples(out)))
    assert [e.fmt for e in converted] == [out_fmt] * len(rows)
    assert [e.raw.get("id", e.raw.get("n")) for e in converted] == [r.get("id", r.get("n")) for r in rows]


TRICKY = (
    '\ufeff  [\n  {"id": "a]\\"}[{,", "instruction": "Close ] and } and \\\\", "output": "x\\\\"},\n'
    '  {"id": "nested", "instruction": "[[1, {\\"a\\": [2]}]]", "output": "ok",\n'
    '   "extra": [[1, [2, {"b": "]"}]], {}]},\n'
    '  {"id": "uni", "instruction": "日本語 \\u00e9 🎉", "output": "\\ud83c\\udf89 \\"quoted\\" \\n"},\n'
    '  {"id": "empty", "instruction": "", "output": "a"},\n'
    "  42,\n"
    '  {"id": "last", "instruction": "{\\"\\\\\\"\\"}", "output": ","}\n'
    "]\n"
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1 << 20])
def test_json_array_streams_tricky_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    monkeypatch.setattr(files, "_CHUNK_SIZE", chunk_size)
    path = tmp_path / "tricky.json"
    path.write_text(TRICKY, encoding="utf-8")
    expected = orjson.loads(TRICKY.removeprefix("\ufeff"))
    items = list(read_examples(path))
    assert [i.line for i in items] == [1, 2, 3, 4, 5, 6]
    good = [i for i in items if isinstance(i, Example)]
    assert [e.raw for e in good] == [expected[0], expected[1], expected[2], expected[5]]
    assert good[2].turns[0].content == "日本語 é 🎉"
    assert good[3].turns[0].content == '{"\\""}'
    assert items[3] == BadRow(4, "empty instruction", '{"id":"empty","instruction":"","output":"a"}')
    assert items[4] == BadRow(5, "row is not a JSON object (number)", "42")


def test_json_array_scanner_against_orjson_on_random_arrays() -> None:
    rnd = random.Random(7)
    alphabet = ['"', "\\", "[", "]", "{", "}", ",", ":", " ", "\n", "a", "é", "🎉"]

    def value(depth: int) -> Any:
        kind = rnd.randint(0, 4 if depth < 3 else 1)
        if kind == 0:
            return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))
        if kind == 1:
            return rnd.choice([None, True, -1.5, 10**6])
        if kind == 2:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return {str(i): value(depth + 1) for i in range(rnd.randint(0, 3))}

    for _ in range(300):
        rows = [value(0) for _ in range(rnd.randint(0, 5))]
        data = orjson.dumps(rows, option=rnd.choice([0, orjson.OPT_INDENT_2]))
        size = rnd.randint(1, 9)
        chunks = iter([data[i : i + size] for i in range(0, len(data), size)])
        scanned = list(files._scan_array(chunks))
        assert [orjson.loads(text) for text, _ in scanned] == rows
        assert all(error is None for _, error in scanned)


@pytest.mark.parametrize(
    ("text", "tail"),
    [
        (
            '[{"instruction": "q", "output": "a"}, {"instruction": "q2", "out',
            (files._TRUNCATED, '{"instruction": "q2", "out'),
        ),
        ('[{"instruction": "q", "output": "a"},', (files._TRUNCATED, "")),
        ('[{"instruction": "q", "output": "a"}] {"x": 1}', (files._TRAILING, '{"x": 1}')),
        (
            '[{"instruction": "q", "output": "a"},]',
            ("not valid JSON: Input is a zero-length, empty document: line 1 column 1 (char 0)", ""),
        ),
    ],
)
def test_json_array_broken_ends_become_rejects(tmp_path: Path, text: str, tail: tuple[str, str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    first, last = list(read_examples(path))
    assert isinstance(first, Example)
    assert last == BadRow(2, *tail)


def test_json_file_edge_cases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert list(read_examples(empty)) == []
    (tmp_path / "none.json").write_text("[ ]")
    assert list(read_examples(tmp_path / "none.json")) == []
    lines = write_jsonl(tmp_path / "lines.json", ALPACA)
    assert [e.raw for e in examples(list(read_examples(lines)))] == ALPACA
    (tmp_path / "obj.json").write_text('{\n  "data": []\n}\n')
    with pytest.raises(DataError, match="not a JSON array and not JSON Lines") as info:
        read_examples(tmp_path / "obj.json")
    assert info.value.source == str(tmp_path / "obj.json")
    (tmp_path / "str.json").write_text('"rows"')
    with pytest.raises(DataError, match="the top-level JSON value is not an array of rows"):
        read_examples(tmp_path / "str.json")
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="cannot tell the file format"):
        read_examples(tmp_path / "data.csv")
    with pytest.raises(ConfigError):
        read_examples(lines, file_format="csv")


def test_offset_and_limit(tmp_path: Path) -> None:
    rows: list[Any] = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    rows[3] = {"instruction": "q3"}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    items = list(read_examples(path, offset=2, limit=4))
    assert [(type(i).__name__, i.line) for i in items] == [
        ("Example", 3),
        ("BadRow", 4),
        ("Example", 5),
        ("Example", 6),
    ]
    assert [i.index for i in items if isinstance(i, Example)] == [0, 2, 3]
    assert list(read_examples(path, limit=0)) == []
    assert list(read_examples(path, offset=10)) == []


def test_parquet_offset_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(2500)]), path
    )
    items = examples(list(read_examples(path, offset=2047, limit=3)))
    assert [(e.index, e.line, e.raw["instruction"]) for e in items] == [
        (0, 2048, "q2047"),
        (1, 2049, "q2048"),
        (2, 2050, "q2049"),
    ]
    assert count_rows(path) == 2500


def test_parquet_rejects_are_reserialized(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": None, "n": 1}]), path)
    assert list(read_examples(path)) == [
        BadRow(1, "field 'output' is null", '{"instruction":"q","output":null,"n":1}')
    ]


def test_count_rows(tmp_path: Path) -> None:
    assert count_rows(write_jsonl(tmp_path / "a.jsonl", ALPACA)) == 3
    (tmp_path / "b.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}')
    assert count_rows(tmp_path / "b.jsonl") == 2
    (tmp_path / "c.json").write_text("[]")
    assert count_rows(tmp_path / "c.json") == 0
    (tmp_path / "d.json").write_text('[{"a": "]"}, {"b": [1, {"c": "x,y"}]}, 3]')
    assert count_rows(tmp_path / "d.json") == 3
    assert count_rows(tmp_path / "missing.parquet") is None


def test_large_jsonl_is_read_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    row = {
        "instruction": "Explain the question number {} in detail, please. " * 2,
        "output": "An answer. " * 10,
    }
    with path.open("wb") as f:
        for i in range(200_000):
            f.write(orjson.dumps({"id": i, **row}) + b"\n")
    size = path.stat().st_size
    assert size > 40_000_000
    tracemalloc.start()
    try:
        count = 0
        for item in read_examples(path):
            assert isinstance(item, Example)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 2_000_000, f"peak {peak} bytes for a {size} byte file"


def test_ordered_writer_restores_input_order(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    writer = OrderedWriter(out)
    assert writer.partial_path == tmp_path / "sub" / "out.jsonl.partial"
    assert writer.partial_path.exists() and not out.exists()
    for index in [3, 1, 4, 0, 2, 6, 5]:
        writer.submit(index, None if index == 4 else {"i": index})
    assert writer.written == 6 and writer.buffered == 0
    with pytest.raises(ValueError, match="submitted twice"):
        writer.submit(2, {"i": 2})
    writer.close()
    assert read_jsonl(out) == [{"i": i} for i in (0, 1, 2, 3, 5, 6)]
    assert not writer.partial_path.exists()


def test_ordered_writer_buffers_until_the_gap_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = OrderedWriter(out)
    writer.submit(1, {"i": 1})
    writer.flush()
    assert writer.partial_path.read_bytes() == b""
    assert writer.buffered == 1
    writer.submit(0, {"i": 0})
    writer.flush()
    assert writer.partial_path.read_bytes() == b'{"i":0}\n{"i":1}\n'
    writer.close()


def test_ordered_writer_abort_and_errors_leave_no_final_file(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="boom"), OrderedWriter(out) as writer:
        writer.submit(0, {"i": 0})
        raise RuntimeError("boom")
    assert not out.exists()
    assert writer.partial_path.read_bytes() == b'[\n{"i":0}'

    gap = OrderedWriter(out)
    gap.submit(1, {"i": 1})
    with pytest.raises(RuntimeError, match="index 0 was never submitted"):
        gap.close()
    assert not out.exists() and gap.partial_path.exists()
    with pytest.raises(RuntimeError, match="already closed"):
        gap.submit(0, {"i": 0})


@pytest.mark.parametrize(("suffix", "content"), [(".json", b"]\n"), (".jsonl", b"")])
def test_ordered_writer_empty_output_is_valid(tmp_path: Path, suffix: str, content: bytes) -> None:
    out = tmp_path / f"out{suffix}"
    with OrderedWriter(out) as writer:
        writer.submit(0, None)
    assert out.read_bytes() == (b"[\n" if suffix == ".json" else b"") + content


def test_ordered_writer_json_array_layout(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    with OrderedWriter(out) as writer:
        writer.submit(1, {"t": "日本", "b": [1]})
        writer.submit(0, {"a": 1})
    assert out.read_bytes() == '[\n{"a":1},\n{"t":"日本","b":[1]}\n]\n'.encode()


def test_parquet_writer_batches_and_schema_drift(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    rows = [{"a": f"x{i}", "b": None if i < 1500 else i} for i in range(3000)]
    with OrderedWriter(out) as writer:
        for i, row in enumerate(rows):
            writer.submit(i, row)
    assert pq.read_table(out).to_pylist() == rows

    assert pq.read_schema(out).field("b").type == pa.int64()

    bad = tmp_path / "bad.parquet"
    with pytest.raises(DataError, match=r"output rows 1025\.\.2048 .*new or retyped columns: c"):  # noqa: SIM117
        with OrderedWriter(bad) as writer:
            for i in range(2048):
                writer.submit(i, {"a": "x"} if i < 1024 else {"a": "x", "c": 1})
    assert not bad.exists()

    typed = tmp_path / "typed.parquet"
    schema = pa.schema([("a", pa.string()), ("b", pa.string())])
    with OrderedWriter(typed, parquet_schema=schema) as writer:
        writer.submit(0, {"a": "x", "b": None})
    assert pq.read_schema(typed).field("b").type == pa.string()

    empty = tmp_path / "empty.parquet"
    OrderedWriter(empty).close()
    assert pq.read_table(empty).num_rows == 0


def test_output_suffix_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"output must be \.jsonl, \.json or \.parquet"):
        OrderedWriter(tmp_path / "out.csv")


def test_rejects_writer(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "rejects.jsonl"
    with RejectsWriter(path) as rejects:
        assert not path.exists()
        rejects.write(BadRow(3, "field 'output' is null", '{"output": null}'))
        assert (
            path.read_bytes()
            == b'{"line":3,"error":"field \'output\' is null","raw":"{\\"output\\": null}"}\n'
        )
        rejects.write(BadRow(9, "empty instruction", "é"))
    assert rejects.count == 2
    assert read_jsonl(path)[1] == {"line": 9, "error": "empty instruction", "raw": "é"}
    with RejectsWriter(path) as again:
        again.write(BadRow(1, "x", "y"))
    assert len(read_jsonl(path)) == 3


def test_jsonl_appender(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "trace.jsonl"
    with JsonlAppender(path) as trace:
        trace.append({"k": 1})
        assert path.read_bytes() == b'{"k":1}\n'
        trace.append({"k": "é"})
    assert read_jsonl(path) == [{"k": 1}, {"k": "é"}]


def test_missing_extras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        read_examples(folder)
    (folder / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtra, match=r"pip install 'coevol\[datasets\]'"):
        read_examples(folder)
    with pytest.raises(MissingExtra, match=r"pip install 'coevol\[datasets\]'"):
        read_examples("hf://owner/name:train")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(MissingExtra, match=r"Parquet files needs .* pip install 'coevol\[parquet\]'"):
        read_examples(tmp_path / "d.parquet")
    with pytest.raises(MissingExtra, match="parquet"):
        OrderedWriter(tmp_path / "out.parquet")


def test_parquet_columns_null_for_too_long_keep_the_null_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_PARQUET_BATCH", 4)
    monkeypatch.setattr(files, "_PARQUET_HOLD", 2)
    out = tmp_path / "out.parquet"
    writer = OrderedWriter(out)
    for i in range(8):
        writer.submit(i, {"a": i, "b": None})
    with pytest.raises(DataError, match=r"output rows 9\.\.12 do not fit .*new or retyped columns: b\)"):
        for i in range(8, 12):
            writer.submit(i, {"a": i, "b": "late"})
    writer.abort()
    assert not out.exists()

    with pytest.raises(DataError, match=r"output rows 9\.\.9 do not fit"), OrderedWriter(out) as writer:
        for i in range(9):
            writer.submit(i, {"a": i, "b": None if i < 8 else "late"})
    assert not out.exists() and writer.partial_path.exists()
    with pytest.raises(RuntimeError, match="already closed"):
        writer.submit(9, None)


def test_datasets_folders_and_hub_ids_are_wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class DatasetDict(dict[str, Any]):
        pass

    calls: list[tuple[str, str, bool]] = []

    def load_dataset(name: str, *, split: str, streaming: bool) -> Any:
        calls.append((name, split, streaming))
        return iter(MESSAGES)

    fake = types.ModuleType("datasets")
    fake.DatasetDict = DatasetDict  # type: ignore[attr-defined]
    fake.load_from_disk = lambda path: DatasetDict(train=ALPACA, test=[])  # type: ignore[attr-defined]
    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    items = examples(list(read_examples(folder, offset=1)))
    assert [(e.index, e.line, e.raw) for e in items] == [(0, 2, ALPACA[1]), (1, 3, ALPACA[2])]
    assert count_rows(folder) == 3
    assert [e.fmt for e in examples(list(read_examples("hf://owner/name:validation")))] == ["messages"] * 2
    list(read_examples("hf://owner/name"))
    assert calls == [("owner/name", "validation", True), ("owner/name", "train", True)]
