"""Verdict parsing (first line only) and the Eq. 4 acceptance rule."""

from __future__ import annotations

import itertools

import pytest

from coevol.errors import ParseError
from coevol.roles.agents import clean_edit
from coevol.roles.verdict import (
    Order,
    Verdict,
    cannot_accept,
    decide,
    order_scores,
    parse_score_pair,
    parse_verdict,
)

A1, A2, EQ = Verdict.ASSISTANT_1, Verdict.ASSISTANT_2, Verdict.EQUAL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<assistant 1>", A1),
        ("<assistant 2>\nBecause it is better.", A2),
        ("<equal>", EQ),
        ("  \n\n  <Assistant 2>  \nreasons", A2),
        ("**<assistant 1>**", A1),
        ("*<equal>*", EQ),
        ("`<assistant 2>`", A2),
        ("Output: <assistant 1>", A1),
        ("output:<equal>", EQ),
        ("**Output:** <assistant 2>", A2),
        ("ASSISTANT 1", A1),
        ("Assistant2", A2),
        ("Equal", EQ),
        ("<assistant 1> is better than <assistant 2>", A1),
        ("The better one is <assistant 2>.", A2),
        ("Assistant 1 <equal>", EQ),  # seen from the embedded 0.5B model: the requested form wins
        ("assistant 2, i.e. <assistant 2>", A2),
    ],
)
def test_parse_verdict(text: str, expected: Verdict) -> None:
    assert parse_verdict(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Hostile explanations: the lines below the verdict name the other assistant, repeatedly.
        ("<assistant 1>\n<assistant 2> is longer, but <assistant 2> is wrong. Assistant 2 loses.", A1),
        ("<assistant 2>\nOutput: <assistant 1>\n<assistant 1>\n<equal>", A2),
        ("<equal>\nAssistant 1 is slightly better... no, <assistant 2> is.", EQ),
    ],
)
def test_only_the_first_line_counts(text: str, expected: Verdict) -> None:
    assert parse_verdict(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "Let me compare them.\n<assistant 1>",
        "Both responses have qualities worth noting.",
        "I prefer assistant 2 over assistant 1",
        "Entities: <assistant 3>",
    ],
)
def test_unparseable_verdicts_raise_with_the_raw_text(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_verdict(text)
    assert info.value.raw == text


def test_score_pairs() -> None:
    assert parse_score_pair("8 6\nexplanation 1 2 3") == (8.0, 6.0)
    assert parse_score_pair("Output: 7.5, 9") == (7.5, 9.0)
    for bad in ("8", "8 6 7", "eleven 3", "12 3"):
        with pytest.raises(ParseError):
            parse_score_pair(bad)


def test_per_order_scores() -> None:
    # (s(previous), s(edited)); forward shows the previous response as Assistant 1.
    assert order_scores(A1, Order.FORWARD) == (1, 0)
    assert order_scores(A2, Order.FORWARD) == (0, 1)
    assert order_scores(EQ, Order.FORWARD) == (1, 1)
    assert order_scores(A1, Order.REVERSE) == (0, 1)
    assert order_scores(A2, Order.REVERSE) == (1, 0)
    assert order_scores(EQ, Order.REVERSE) == (1, 1)


# The whole Eq. 4 decision table: (forward verdict, reverse verdict) -> accepted?
# Accepted only when the edit wins on average: it must win one order and at least tie the other.
EQ4_TABLE = {
    (A1, A1): False,  # position bias to the first slot: 0.5 vs 0.5
    (A1, A2): False,  # previous wins both
    (A1, EQ): False,
    (A2, A1): True,  # edit wins both
    (A2, A2): False,  # position bias to the second slot
    (A2, EQ): True,  # edit wins one, ties the other: 1 vs 0.5
    (EQ, A1): True,
    (EQ, A2): False,
    (EQ, EQ): False,  # a tie keeps the original
}


@pytest.mark.parametrize(("pair", "accepted"), list(EQ4_TABLE.items()))
def test_eq4_decision_table(pair: tuple[Verdict, Verdict], accepted: bool) -> None:
    forward, reverse = pair
    decision = decide(order_scores(forward, Order.FORWARD), order_scores(reverse, Order.REVERSE))
    assert decision.accept is accepted
    assert 0 <= decision.previous <= 1 and 0 <= decision.edited <= 1


def test_early_exit_never_changes_the_outcome() -> None:
    for forward, reverse in itertools.product([A1, A2, EQ], repeat=2):
        f = order_scores(forward, Order.FORWARD)
        if cannot_accept(f):
            assert not decide(f, order_scores(reverse, Order.REVERSE)).accept
    # and it only fires when the first order prefers the previous response
    assert [v for v in (A1, A2, EQ) if cannot_accept(order_scores(v, Order.FORWARD))] == [A1]


def test_early_exit_in_score_mode() -> None:
    for a, b, c, d in itertools.product(range(0, 11, 2), repeat=4):
        forward = (float(a), float(b))
        if cannot_accept(forward, span=10.0):
            assert not decide(forward, (float(c), float(d))).accept


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  The answer.  \n", "The answer."),
        ("### Response:\nThe answer.\n", "The answer."),
        ("### Response: The answer.", "The answer."),
        ("The answer.\n### Response: kept", "The answer.\n### Response: kept"),
    ],
)
def test_editor_output_cleaning(raw: str, clean: str) -> None:
    assert clean_edit(raw) == clean
