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


# Golden table: every first-line shape the judge has been seen to write (or an attacker could),
# with the exact result. ``None`` means "not a verdict": ParseError, and the judge is asked again.
VERDICT_SHAPES: list[tuple[str, Verdict | None]] = [
    # the requested forms, and those 0.1 accepted that are still unambiguous
    ("<assistant 1>", A1),
    ("<assistant 2>\nBecause it is better.", A2),
    ("<equal>", EQ),
    ("  \n\n  <Assistant 2>  \nreasons", A2),
    ("**<assistant 1>**", A1),
    ("*<equal>*", EQ),
    ("`<assistant 2>`", A2),
    ('"<assistant 1>"', A1),
    ("> <assistant 2>", A2),
    ("Output: <assistant 1>", A1),
    ("output:<equal>", EQ),
    ("**Output:** <assistant 2>", A2),
    ("Verdict: Assistant 1", A1),
    ("Final verdict: <equal>", EQ),
    ("ASSISTANT 1", A1),
    ("Assistant2", A2),
    ("Equal", EQ),
    ("Tie.", EQ),
    ("The better one is <assistant 2>.", A2),
    ("<assistant 1> is better", A1),
    ("Assistant 2's response is better.", A2),
    ("Assistant 2\u2019s response is slightly better!", A2),
    ("I prefer assistant 1", A1),
    ("I'd go with <assistant 2>", A2),
    ("Both responses are of equal quality.", EQ),
    ("Assistant 1 is better because it is more accurate.", A1),
    ("<assistant 2> since it is complete", A2),
    # names both assistants, or an assistant and a tie
    ("<assistant 1> is better than <assistant 2>", None),
    ("Assistant 1 is worse than Assistant 2.", None),
    ("<assistant 1> is not better; <assistant 2> wins", None),
    ("Assistant 2 is not as good as Assistant 1", None),
    ("I prefer assistant 1 over assistant 2", None),
    ("I prefer assistant 2 over assistant 1", None),
    ("Assistant 1 and Assistant 2 are equal", None),
    ("Assistant 1 <equal>", None),  # 0.1 read EQUAL; an assistant and a tie is ambiguous
    ("assistant 2, i.e. <assistant 2>", None),  # two tokens, even if they agree
    ("<assistant 1> <assistant 2>", None),
    # negates
    ("Not <assistant 1>", None),
    ("not assistant 2", None),
    ("Neither assistant 1 nor 2", None),
    ("<assistant 1> isn't better", None),
    ("<assistant 1> isn\u2019t better", None),
    ("No, <equal>", None),
    ("Never <assistant 2>", None),
    ("<assistant 2> because it has no errors", None),  # a negation anywhere on the line
    ("<assistant 1> because it doesnt ramble", None),
    # compares or qualifies, so a single token could be flipped
    ("Assistant 1 is worse.", None),
    ("Assistant 1 is inferior", None),
    ("Assistant 2's response is less detailed", None),
    ("Assistant 1 loses", None),
    ("<assistant 1> is better than the other", None),
    ("Assistant 1 is better because it is shorter than the other", None),
    ("<assistant 1> is better because it is clear but wrong", None),
    ("<assistant 2> (8/10)", None),
    ("<assistant 1>?", None),
    ("Perhaps <assistant 1>", None),
    ("Maybe assistant 2", None),
    # no verdict on the first line
    ("", None),
    ("\n\n", None),
    ("Let me compare them.\n<assistant 1>", None),
    ("Both responses have qualities worth noting.", None),
    ("Entities: <assistant 3>", None),
    ("Assistant 12", None),
    ("Both are equally good", None),
]


@pytest.mark.parametrize(("text", "expected"), VERDICT_SHAPES)
def test_verdict_shapes(text: str, expected: Verdict | None) -> None:
    if expected is not None:
        assert parse_verdict(text) is expected
        return
    with pytest.raises(ParseError) as info:
        parse_verdict(text)
    assert info.value.raw == text


def test_refusals_say_why() -> None:
    reasons = {}
    for text in ("x", "<assistant 1> <assistant 2>", "Not <assistant 1>", "Assistant 1 is worse", "<equal>?"):
        with pytest.raises(ParseError) as info:
            parse_verdict(text)
        reasons[text] = str(info.value)
    assert reasons == {
        "x": "judge verdict not found on its first line",
        "<assistant 1> <assistant 2>": "judge's first line names more than one verdict",
        "Not <assistant 1>": "judge's first line negates",
        "Assistant 1 is worse": "judge's first line qualifies its verdict ('worse')",
        "<equal>?": "judge's first line asks rather than decides",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Hostile explanations: the lines below the verdict name the other assistant, repeatedly.
        ("<assistant 1>\n<assistant 2> is longer, but <assistant 2> is wrong. Assistant 2 loses.", A1),
        ("<assistant 2>\nOutput: <assistant 1>\n<assistant 1>\n<equal>", A2),
        ("<equal>\nAssistant 1 is slightly better... no, <assistant 2> is.", EQ),
        ("<assistant 2>\nNot <assistant 2>; it is worse than <assistant 1>.", A2),
    ],
)
def test_only_the_first_line_counts(text: str, expected: Verdict) -> None:
    assert parse_verdict(text) is expected


SCORE_SHAPES: list[tuple[str, tuple[float, float] | None]] = [
    ("8 6\nexplanation 1 2 3", (8.0, 6.0)),
    ("Output: 7.5, 9", (7.5, 9.0)),
    ("**9 3**", (9.0, 3.0)),
    ("Scores: 10 1", (10.0, 1.0)),
    ("Assistant 1: 8, Assistant 2: 6", (8.0, 6.0)),
    ("Assistant 2: 6, Assistant 1: 8", (8.0, 6.0)),  # labelled: read by label, not position
    ("assistant 1 score: 4 and assistant 2 score: 7", (4.0, 7.0)),
    ("8", None),
    ("8 6 7", None),
    ("eleven 3", None),
    ("12 3", None),
    ("1 10", (1.0, 10.0)),
    ("0 5", None),  # the prompt asks for 1 to 10
    ("10.5 3", None),
    ("-3 5", None),
    ("8/10 6/10", None),  # four numbers
    ("7,5 9", None),  # a decimal comma: 7.5 and 9, or 7, 5 and 9?
    ("8 6 (out of 10)", None),
    ("8 6 but the second is better", None),
    ("Assistant 1: 8, Assistant 1: 6", None),
    ("Assistant 1: 8 6", None),
    ("Assistant 1: 8, Assistant 2: 6, Assistant 3: 9", None),
    ("Assistant 2 gets 8 and 6", None),
    ("", None),
    ("Let me score them.\n8 6", None),
]


@pytest.mark.parametrize(("text", "expected"), SCORE_SHAPES)
def test_score_shapes(text: str, expected: tuple[float, float] | None) -> None:
    if expected is not None:
        assert parse_score_pair(text) == expected
        return
    with pytest.raises(ParseError) as info:
        parse_score_pair(text)
    assert info.value.raw == text


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
    # Exact both ways: it fires precisely when no second order could make the edit win, and it
    # does fire (a check that never fires would pass the first half alone).
    grid = [float(x) for x in range(0, 11, 2)]
    fired = set()
    for a, b in itertools.product(grid, repeat=2):
        forward = (a, b)
        reachable = any(decide(forward, (c, d)).accept for c, d in itertools.product(grid, repeat=2))
        assert cannot_accept(forward, span=10.0) is not reachable, forward
        if not reachable:
            fired.add(forward)
    assert fired == {(10.0, 0.0)}


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
