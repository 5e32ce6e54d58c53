"""Rows come back exactly: big and precise numbers, key order and unicode in every JSON format;
a duplicate key or a row nested too deep is a bad row, never a crash."""

from __future__ import annotations

import json
import sys
import types
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.api import arefine_file
from coevol.config import Config
from coevol.domain import BadRow
from coevol.io import jsonrow
from coevol.io.readers import read_examples
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

# Written by hand: orjson would have turned the id into 1.2345678901234568e+29 and x into 0.1.
EXACT_ROW = (
    '{"id":123456789012345678901234567890,"instruction":"Name a colour of the sky.","input":"",'
    '"output":"Blue, mostly.","x":0.1000000000000000055511151231257827,"big":1e400,"neg":-1E-400,'
    '"u64":18446744073709551615,"i64min":-9223372036854775808,"under":-9223372036854775809,'
    '"plain":0.5,"zéro":"naïve ☕ 😀","meta":{"z":1,"a":[1.0,2.50,{"k":null}]}}'
)
PLAIN_ROW = '{"instruction":"Add 2 and 2.","input":"","output":"4","n":7,"f":1.25,"t":true}'


def exact(text: str) -> Any:
    """A JSON value with every number as written (Decimal) and key order kept: what "exact" means."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal, object_pairs_hook=list)


def write(path: Path, rows: list[str]) -> Path:
    if path.suffix == ".json":
        path.write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")
    else:
        path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[str]:
    """The row texts of a JSON Lines file or a JSON array written one row per line."""
    lines = path.read_text("utf-8").splitlines()
    if path.suffix == ".json":
        lines = [line.removesuffix(",") for line in lines[1:-1]]
    return lines


@pytest.mark.parametrize(("src", "dst"), [("in.jsonl", "out.jsonl"), ("in.json", "out.json"),
                                          ("in.jsonl", "out.json"), ("in.json", "out.jsonl")])  # fmt: skip
async def test_extra_fields_round_trip_exactly(tmp_path: Path, src: str, dst: str) -> None:
    data = write(tmp_path / src, [EXACT_ROW, PLAIN_ROW])
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as fake:
        run = await arefine_file(data, tmp_path / dst, Config(base_url=fake.base_url, model="m"))
    assert run.summary.kept == 2 and run.summary.rejected == 0
    written = rows_of(tmp_path / dst)
    assert [exact(r) for r in written] == [exact(EXACT_ROW), exact(PLAIN_ROW)]  # every value, every key
    # Byte for byte, but for the spelling of a number a double holds exactly (2.50 is written 2.5).
    assert written == [EXACT_ROW.replace("2.50", "2.5"), PLAIN_ROW]
    trace = [orjson.loads(line) for line in run.paths.trace.read_bytes().splitlines()]
    assert [t["index"] for t in trace] == [0, 1]
    assert json.loads(run.paths.trace.read_text().splitlines()[0])["id"] == 123456789012345678901234567890


async def test_exact_fields_survive_an_edit_a_conversion_and_a_replay(tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", [EXACT_ROW])
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        cfg = Config(base_url=fake.base_url, model="m", max_rounds=1)
        await arefine_file(data, out, cfg, output_format="sharegpt")
        sent = len(fake.requests)
        again = await arefine_file(data, out, cfg, output_format="sharegpt")
        assert len(fake.requests) == sent and again.summary.resumed == 1
    written = exact(out.read_text())
    original = dict(exact(EXACT_ROW))
    kept = {k: v for k, v in written if k != "conversations"}
    assert kept == {k: v for k, v in original.items() if k not in ("instruction", "input", "output")}
    assert [k for k, _ in written] == ["id", "conversations", "x", "big", "neg", "u64", "i64min", "under",
                                       "plain", "zéro", "meta"]  # fmt: skip
    assert dict(dict(written)["conversations"][1])["value"] == "Blue, mostly." + EDIT_MARK


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"instruction":"a","instruction":"b","output":"c"}', "duplicate key 'instruction'"),
        ('{"instruction":"a","output":"c","m":{"k":1,"k":2}}', "duplicate key 'k'"),
        ('{"instruction":"a","output":"c","m":' + "[" * 65 + "]" * 65 + "}", "nested deeper than 64 levels"),
        (
            '{"instruction":"a","output":"c","m":' + "[" * 300 + "]" * 300 + "}",
            "nested deeper than 64 levels",
        ),
        ('{"instruction":"a","output":"c","m":' + '{"a":' * 3000 + "1" + "}" * 3001, "nested deeper"),
        ('{"instruction":"a","output":"c","n":NaN}', "not valid JSON"),
        ('{"instruction":"a","output":"c","n":1e400,}', "not valid JSON"),
        ('{"instruction":"a","output":"c","n":' + "9" * 5000 + "}", "not valid JSON"),
    ],
)
def test_hostile_rows_are_bad_rows_with_a_reason(tmp_path: Path, text: str, reason: str) -> None:
    data = write(tmp_path / "in.jsonl", [PLAIN_ROW, text, PLAIN_ROW])
    items = list(read_examples(data))
    assert [type(i).__name__ for i in items] == ["Example", "BadRow", "Example"]
    bad = items[1]
    assert isinstance(bad, BadRow) and bad.line == 2 and reason in bad.error and bad.raw == text


async def test_a_deeply_nested_row_never_stops_the_run_and_the_rerun_works(tmp_path: Path) -> None:
    deep = '{"instruction":"a","output":"c","m":' + "[" * 900 + "]" * 900 + "}"
    data = write(tmp_path / "in.json", [PLAIN_ROW, deep, PLAIN_ROW])
    out = tmp_path / "out.json"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as fake:
        cfg = Config(base_url=fake.base_url, model="m")
        for _ in range(2):
            run = await arefine_file(data, out, cfg)
            assert run.summary.complete and run.summary.rejected == 1 and run.summary.kept == 2
    rejects = [orjson.loads(line) for line in run.paths.rejects.read_bytes().splitlines()]
    assert [(r["line"], r["error"]) for r in rejects] == [(2, "nested deeper than 64 levels")]


def test_a_nested_parsed_row_is_refused_too() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(jsonrow.RowJSONError, match="nested deeper than 64 levels"):
        jsonrow.check_depth({"m": deep})
    jsonrow.check_depth({"m": [[["fine"]]]})


@pytest.mark.parametrize(
    "text",
    [
        b'{"id":123456789012345678901234567890}',
        b'{"x":0.1000000000000000055511151231257827,"y":1e400,"z":-0.0,"w":1E+2}',
        b'{"k":"\\u00e9\\ud83d\\ude00","\\"q\\"":"a\\\\b"}',
        b'[1,2.5,"x",null,true,false,{"a":[]}]',
        b'{"s":"' + "é".encode() * 3 + b'"}',
    ],
)
def test_loads_then_dumps_keeps_every_value(text: bytes) -> None:
    value = jsonrow.loads_row(text)
    assert exact(jsonrow.dumps(value).decode()) == exact(text.decode())
    assert exact(jsonrow.canonical(value).decode()) is not None


def test_ordinary_rows_take_orjsons_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(text: Any) -> Any:
        raise AssertionError("the slow parser was used for an ordinary row")

    monkeypatch.setattr(jsonrow, "_slow_loads", slow)
    row = jsonrow.loads_row(PLAIN_ROW.encode())
    assert row == orjson.loads(PLAIN_ROW) and list(row) == ["instruction", "input", "output", "n", "f", "t"]
    assert jsonrow.dumps(row) == orjson.dumps(row)
    with pytest.raises(AssertionError, match="slow parser"):
        jsonrow.loads_row(b'{"id":123456789012345678901234567890}')


def test_exact_numbers_are_kept_as_read() -> None:
    row = jsonrow.loads_row(EXACT_ROW.encode())
    assert row["id"] == 123456789012345678901234567890 and isinstance(row["id"], int)
    assert isinstance(row["x"], Decimal) and str(row["x"]) == "0.1000000000000000055511151231257827"
    assert row["plain"] == 0.5 and isinstance(row["plain"], float)
    assert row["under"] == -9223372036854775809


def test_a_deep_row_from_a_dataset_is_a_bad_row(monkeypatch: pytest.MonkeyPatch) -> None:
    deep: Any = "leaf"
    for _ in range(3000):
        deep = [deep]
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, split, streaming: iter(  # type: ignore[attr-defined]
        [{"instruction": "a", "output": "b", "m": deep}, {"instruction": "c", "output": "d"}]
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = lambda repo, **_: "/snapshot"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    bad, good = list(read_examples("hf://owner/name"))
    assert isinstance(bad, BadRow) and bad.error == "nested deeper than 64 levels" and bad.line == 1
    assert bad.raw == "<a dict that cannot be written as JSON>"
    assert not isinstance(good, BadRow)
