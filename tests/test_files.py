"""Streaming reads, ordered atomic writes, rejects and trace files."""

from __future__ import annotations

import os
import random
import sys
import tracemalloc
import types
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.domain import BadRow, Example
from coevol.errors import ConfigError, DataError, MissingExtra
from coevol.io import jsonarray, parquet, readers, writers
from coevol.io.formats import render_example
from coevol.io.readers import count_rows, read_examples
from coevol.io.writers import RowWriter, commit, recover

from .optional import pyarrow

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
    with RowWriter(out) as writer:
        for item in read_examples(path):
            assert isinstance(item, Example), item
            writer.write(render_example(item, item.turns, out_fmt))


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
        pa, pq = pyarrow()
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
    monkeypatch.setattr(readers, "_CHUNK_SIZE", chunk_size)
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
        scanned = list(jsonarray.scan_array(chunks))
        assert [orjson.loads(text) for text, _ in scanned] == rows
        assert all(error is None for _, error in scanned)


@pytest.mark.parametrize(
    ("text", "tail"),
    [
        (
            '[{"instruction": "q", "output": "a"}, {"instruction": "q2", "out',
            (jsonarray._TRUNCATED, '{"instruction": "q2", "out'),
        ),
        ('[{"instruction": "q", "output": "a"},', (jsonarray._TRUNCATED, "")),
        ('[{"instruction": "q", "output": "a"}] {"x": 1}', (jsonarray._TRAILING, '{"x": 1}')),
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
    pa, pq = pyarrow()
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
    pa, pq = pyarrow()
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


def test_row_writer_writes_a_partial_file_then_renames_it(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = RowWriter(out)
    partial = tmp_path / "out.jsonl.partial"
    assert writer.file.partial == partial and partial.exists() and not out.exists()
    for i in range(3):
        writer.write({"i": i})
    assert writer.written == 3
    writer.close()
    assert read_jsonl(out) == [{"i": i} for i in range(3)]
    assert not partial.exists()


def test_row_writer_abort_and_errors_leave_no_final_file(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"), RowWriter(out) as writer:
        writer.write({"i": 0})
        raise RuntimeError("boom")
    assert out.read_bytes() == b"previous"
    assert writer.file.partial.read_bytes() == b'[\n{"i":0}'


@pytest.mark.parametrize(("suffix", "content"), [(".json", b"[\n]\n"), (".jsonl", b"")])
def test_row_writer_empty_output_is_valid(tmp_path: Path, suffix: str, content: bytes) -> None:
    out = tmp_path / f"out{suffix}"
    with RowWriter(out):
        pass
    assert out.read_bytes() == content


def test_row_writer_json_array_layout(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    with RowWriter(out) as writer:
        writer.write({"a": 1})
        writer.write({"t": "日本", "b": [1]})
    assert out.read_bytes() == '[\n{"a":1},\n{"t":"日本","b":[1]}\n]\n'.encode()


def test_parquet_writer_batches_and_schema_drift(tmp_path: Path) -> None:
    pa, pq = pyarrow()
    out = tmp_path / "out.parquet"
    rows = [{"a": f"x{i}", "b": None if i < 1500 else i} for i in range(3000)]
    with RowWriter(out) as writer:
        for row in rows:
            writer.write(row)
    assert pq.read_table(out).to_pylist() == rows

    assert pq.read_schema(out).field("b").type == pa.int64()

    bad = tmp_path / "bad.parquet"
    with pytest.raises(DataError, match=r"output rows 1025\.\.2048 .*new or retyped columns: c"):  # noqa: SIM117
        with RowWriter(bad) as writer:
            for i in range(2048):
                writer.write({"a": "x"} if i < 1024 else {"a": "x", "c": 1})
    assert not bad.exists()

    typed = tmp_path / "typed.parquet"
    schema = pa.schema([("a", pa.string()), ("b", pa.string())])
    with RowWriter(typed, parquet_schema=schema) as writer:
        writer.write({"a": "x", "b": None})
    assert pq.read_schema(typed).field("b").type == pa.string()

    empty = tmp_path / "empty.parquet"
    RowWriter(empty).close()
    assert pq.read_table(empty).num_rows == 0


def test_output_suffix_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"output must be \.jsonl, \.json or \.parquet"):
        RowWriter(tmp_path / "out.csv")


def test_a_writer_that_keeps_nothing_empty_removes_the_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    with RowWriter(path, keep_empty=False) as rejects:
        rejects.write({"line": 3, "error": "field 'output' is null", "raw": '{"output": null}'})
    assert (
        path.read_bytes() == b'{"line":3,"error":"field \'output\' is null","raw":"{\\"output\\": null}"}\n'
    )
    with RowWriter(path, keep_empty=False):
        pass
    assert not path.exists() and not (tmp_path / "rejects.jsonl.partial").exists()


def test_commit_moves_a_set_and_recover_finishes_a_crashed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, journal = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "a.commit.json"
    for path in (a, b):
        path.write_bytes(b"old\n")
    wa, wb = RowWriter(a), RowWriter(b)
    wa.write({"new": 1})
    wb.write({"new": 2})
    real = os.replace
    done: list[str] = []

    def crash_after_the_journal_and_one_rename(src: Any, dst: Any) -> None:
        real(src, dst)
        done.append(str(dst))
        if len(done) == 2:  # the journal, then a.jsonl: b.jsonl is still old
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash_after_the_journal_and_one_rename)
    with pytest.raises(KeyboardInterrupt):
        commit([wa, wb], journal=journal)
    monkeypatch.setattr(os, "replace", real)
    assert read_jsonl(a) == [{"new": 1}] and b.read_bytes() == b"old\n"  # a mixed set
    assert journal.exists()
    assert recover(journal, [a, b])
    assert read_jsonl(a) == [{"new": 1}] and read_jsonl(b) == [{"new": 2}]
    assert not journal.exists() and not recover(journal, [a, b])


def test_recover_renames_only_the_names_it_is_allowed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "victim.txt.partial").write_text("hostile")
    journal = tmp_path / "out.commit.json"
    journal.write_bytes(orjson.dumps({"rename": ["victim.txt", "../x"], "remove": ["victim.txt"]}))
    assert recover(journal, [tmp_path / "out.json"])
    assert victim.read_text() == "keep"
    journal.write_bytes(b"\x00garbage")
    assert recover(journal, [tmp_path / "out.json"]) and not journal.exists()


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
    with pytest.raises(
        MissingExtra, match=r"dependency for Parquet files is not installed: pip install 'coevol\[parquet\]'"
    ):
        read_examples(tmp_path / "d.parquet")
    with pytest.raises(MissingExtra, match="parquet"):
        RowWriter(tmp_path / "out.parquet")


def test_parquet_columns_null_for_too_long_keep_the_null_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyarrow()
    monkeypatch.setattr(writers, "PARQUET_BATCH", 4)
    monkeypatch.setattr(parquet, "PARQUET_HOLD", 2)
    out = tmp_path / "out.parquet"
    writer = RowWriter(out)
    for i in range(8):
        writer.write({"a": i, "b": None})
    with pytest.raises(DataError, match=r"output rows 9\.\.12 do not fit .*new or retyped columns: b\)"):
        for i in range(8, 12):
            writer.write({"a": i, "b": "late"})
    writer.abort()
    assert not out.exists()

    with pytest.raises(DataError, match=r"output rows 9\.\.9 do not fit"), RowWriter(out) as writer:
        for i in range(9):
            writer.write({"a": i, "b": None if i < 8 else "late"})
    assert not out.exists() and writer.file.partial.exists()


def test_datasets_folders_and_hub_ids_are_wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class DatasetDict(dict[str, Any]):
        pass

    calls: list[tuple[str, str, bool]] = []

    def load_dataset(name: str, *, split: str, streaming: bool) -> Any:
        calls.append((name, split, streaming))
        return iter(MESSAGES)

    def snapshot_download(repo: str, *, repo_type: str, revision: str | None, allow_patterns: Any) -> str:
        assert repo_type == "dataset"
        return f"/snapshots/{repo}@{revision}"

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)

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
    list(read_examples("hf://datasets/owner/name@v1.0"))
    assert calls == [
        ("/snapshots/owner/name@None", "validation", True),
        ("/snapshots/owner/name@v1.0", "train", True),
    ]
