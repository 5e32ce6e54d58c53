"""Issue 17: an input with no usable row is refused before anything is created, saying what was
found (and naming a wrong encoding); an input named like the output's partial file is never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coevol.api import refine_file
from coevol.cli.main import main
from coevol.config import Config
from coevol.errors import OutputError
from coevol.io.readers import guess_encoding

ROWS = [{"instruction": "Name a prime.", "input": "", "output": "Nine."}] * 2
TEXT = "".join(json.dumps(r) + "\n" for r in ROWS)
FLAGS = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-q"]


def _refine(data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    out = data.with_name("out.jsonl")
    assert main(["refine", str(data), "-o", str(out), *FLAGS, *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not Path(f"{out}.coevol.db").exists()  # refused before anything
    return err


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("empty.jsonl", b"", "the file is empty: nothing to refine"),
        ("blank.jsonl", b"\n\n  \n", "the file holds no rows"),
        ("utf16.jsonl", TEXT.encode("utf-16"), "the file is UTF-16 (little-endian, with a byte order mark)"),
        ("utf16le.jsonl", TEXT.encode("utf-16-le"), "the file is UTF-16 (little-endian); coevol reads UTF-8"),
        ("utf16be.json", TEXT.encode("utf-16-be"), "the file is UTF-16 (big-endian)"),
        ("utf32.jsonl", TEXT.encode("utf-32"), "the file is UTF-32 (little-endian, with a byte order mark)"),
        ("utf32be.jsonl", TEXT.encode("utf-32-be"), "the file is UTF-32 (big-endian)"),
        (
            "pretty.jsonl",
            json.dumps(ROWS, indent=2).encode(),
            "It looks like a JSON array: name the file .json",
        ),
        ("wrapped.json", json.dumps({"data": ROWS}).encode(), "one JSON object holding the rows under a key"),
        (
            "latin1.jsonl",
            '{"instruction": "Caf\u00e9 cr\u00e8me?", "output": "Ol\u00e9"}\n'.encode("latin-1"),
            "looks like a single-byte code page such as Latin-1",
        ),
        (
            "cp1252.jsonl",
            '{"instruction": "\u201cquoted\u201d", "output": "x"}\n'.encode("cp1252"),
            "Windows-1252",
        ),
    ],
)
def test_an_input_without_a_usable_row_is_refused_saying_what_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, said: str
) -> None:
    data = tmp_path / name
    data.write_bytes(content)
    assert said in _refine(data, capsys)


def test_an_offset_past_the_last_row_and_all_rows_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(TEXT)
    assert "no row at or after --offset 5" in _refine(data, capsys, "--offset", "5")
    data.write_text('{"id": 1}\n{"id": 2}\n')
    err = _refine(data, capsys)
    assert "no usable row: all 2 rows were rejected (the first, line 1:" in err


def test_guess_encoding_names_what_is_not_utf8() -> None:
    assert guess_encoding(b'{"a": "caf\xc3\xa9"}\n') is None
    assert guess_encoding(b"") is None
    assert guess_encoding(b"a" * 4095 + "\u00e9".encode()) is None  # the sniff ends mid-character
    assert guess_encoding(b"\xef\xbb\xbf{}") is None  # UTF-8 with a byte order mark is UTF-8
    assert guess_encoding("{}".encode("utf-16-le")) == "UTF-16 (little-endian)"


def test_an_input_named_like_the_outputs_partial_file_is_never_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "z.jsonl.partial"
    data.write_text(TEXT)
    assert main(["refine", str(data), "-o", str(tmp_path / "z.jsonl"), *FLAGS]) == 1
    assert "error: " in capsys.readouterr().err
    assert data.read_text() == TEXT
    with pytest.raises(
        OutputError, match=r"the partial file of output .*z\.jsonl\.partial is the input file"
    ):
        refine_file(data, tmp_path / "z.jsonl", Config(base_url="http://127.0.0.1:9/v1", model="m"))
    assert data.read_text() == TEXT
