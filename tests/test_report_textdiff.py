"""word_diff: exact operations, and the reconstruction property on awkward inputs."""

from __future__ import annotations

import itertools

import pytest

from coevol.textdiff import DiffOp, diff_stats, word_diff


def _sides(ops: list[DiffOp]) -> tuple[str, str]:
    a = "".join(op.text for op in ops if op.kind != "insert")
    b = "".join(op.text for op in ops if op.kind != "delete")
    return a, b


def test_one_word_replaced() -> None:
    assert word_diff("the quick brown fox", "the slow brown fox") == [
        DiffOp("equal", "the "),
        DiffOp("delete", "quick "),
        DiffOp("insert", "slow "),
        DiffOp("equal", "brown fox"),
    ]


def test_punctuation_is_its_own_token() -> None:
    assert word_diff("Hello, world.", "Hello, world!") == [
        DiffOp("equal", "Hello, world"),
        DiffOp("delete", "."),
        DiffOp("insert", "!"),
    ]


def test_insertion_and_deletion() -> None:
    assert word_diff("a c", "a b c") == [DiffOp("equal", "a "), DiffOp("insert", "b "), DiffOp("equal", "c")]
    assert word_diff("a b c", "a c") == [DiffOp("equal", "a "), DiffOp("delete", "b "), DiffOp("equal", "c")]


def test_identical_and_empty() -> None:
    assert word_diff("same", "same") == [DiffOp("equal", "same")]
    assert word_diff("", "") == []
    assert word_diff("", "new") == [DiffOp("insert", "new")]
    assert word_diff("old", "") == [DiffOp("delete", "old")]


def test_over_the_token_limit_is_coarse_but_exact() -> None:
    assert word_diff("a b c d", "a x y d", max_tokens=1) == [
        DiffOp("equal", "a "),
        DiffOp("delete", "b c "),
        DiffOp("insert", "x y "),
        DiffOp("equal", "d"),
    ]
    assert word_diff("a b c d", "a x y d", max_tokens=2) == [
        DiffOp("equal", "a "),
        DiffOp("delete", "b c "),
        DiffOp("insert", "x y "),
        DiffOp("equal", "d"),
    ]
    assert word_diff("p b q", "p x q y", max_tokens=1)[-1] == DiffOp("insert", "x q y")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("line one\nline two\n\n  indented", "line one\nline 2\n\tindented"),
        ("</script><img src=x onerror=alert(1)>", "<b>&amp;</b>\u2028x"),
        ("日本語 テキスト", "日本語のテキスト"),
        ("\x1b[2J clear", "clear \x00 nul"),
        ("word " * 300, "word " * 150 + "other " + "word " * 149),
    ],
)
def test_ops_rebuild_both_texts(a: str, b: str) -> None:
    ops = word_diff(a, b)
    assert _sides(ops) == (a, b)
    assert all(op.text for op in ops)
    assert all(x.kind != y.kind for x, y in itertools.pairwise(ops))


def test_a_long_text_with_an_appended_sentence_is_one_insertion() -> None:
    long = "word " * 5000
    assert word_diff(long, long + "new end.") == [DiffOp("equal", long), DiffOp("insert", "new end.")]


def test_diff_stats_counts_words() -> None:
    assert diff_stats(word_diff("the quick brown fox", "the very slow brown fox!")) == (1, 2)
