"""``--judge prob``: the digit-token rule, the mean over both orders and the margin (golden tests).

The token sequences are the shapes real servers send for Table 9's verdict: Qwen2.5 (llama.cpp,
vLLM) splits ``<assistant 2>`` into ``<``, ``assistant``, `` ``, ``2``, ``>``; Llama 3 does the same
with different spacing of the alternatives; a SentencePiece model (Llama 2, Mistral) writes the
digit with its leading space as one piece (``▁2`` decoded as `` 2``).
"""

from __future__ import annotations

import math

import pytest

from coevol.domain import DigitProbs
from coevol.llm.logprobs import logprobs_from_json, logprobs_to_json, parse_chat_logprobs
from coevol.llm.types import GenParams, TokenLogprob
from coevol.roles.prob import (
    edit_probability,
    prefer_probability,
    prob_accepts,
    prob_cannot_accept,
    read_digits,
)
from coevol.roles.verdict import Order

LN = math.log


def tok(token: str, p: float, *alts: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token, LN(p), tuple((t, LN(q)) for t, q in alts))


# Qwen2.5 via llama.cpp: "<assistant 2>\nAssistant 2 is correct." -- the digit is its own token.
QWEN = (
    tok("<", 0.99, ("<", 0.99), ("**", 0.005)),
    tok("assistant", 0.98, ("assistant", 0.98), ("Assistant", 0.01)),
    tok(" ", 0.97, (" ", 0.97), ("_", 0.01)),
    tok("2", 0.6, ("2", 0.6), ("1", 0.3), ("3", 0.01)),
    tok(">\n", 0.9, (">\n", 0.9), (">", 0.09)),
    tok("Assistant", 0.9, ("Assistant", 0.9)),
    tok(" ", 0.9, (" ", 0.9)),
    tok("1", 0.5, ("1", 0.5), ("2", 0.5)),
)
# Llama 3: "Output: <assistant 1>" after a blank line; the alternatives list "2" first.
LLAMA3 = (
    tok("\n\n", 0.5, ("\n\n", 0.5)),
    tok("Output", 0.8, ("Output", 0.8)),
    tok(":", 0.99, (":", 0.99)),
    tok(" <", 0.9, (" <", 0.9)),
    tok("assistant", 0.99, ("assistant", 0.99)),
    tok(" ", 0.99, (" ", 0.99)),
    tok("1", 0.45, ("2", 0.5), ("1", 0.45), ("0", 0.01)),
    tok(">", 0.99, (">", 0.99)),
)
# SentencePiece: the digit carries its leading space; both spellings of each digit are listed.
SPIECE = (
    tok("Ass", 0.9, ("Ass", 0.9)),
    tok("istant", 0.99, ("istant", 0.99)),
    tok(" 2", 0.7, (" 2", 0.7), (" 1", 0.2), ("2", 0.05), ("1", 0.05)),
    tok(" is", 0.8, (" is", 0.8)),
)
# The other digit is not among the alternatives at all.
ABSENT = (
    tok("<", 0.99, ("<", 0.99)),
    tok("assistant", 0.99, ("assistant", 0.99)),
    tok(" ", 0.99, (" ", 0.99)),
    tok("2", 0.95, ("2", 0.95), ("<", 0.01)),
    tok(">", 0.99, (">", 0.99)),
)
# The generated digit is missing from its own alternatives (a server listing only the others).
SELF_ABSENT = (tok("<assistant", 0.9), tok(" ", 0.9), tok("1", 0.8, ("2", 0.2)))
# "<equal>", then an explanation that numbers its points: no digit on the verdict line.
EQUAL = (
    tok("<", 0.99, ("<", 0.99)),
    tok("equal", 0.7, ("equal", 0.7), ("assistant", 0.3)),
    tok(">\n", 0.9, (">\n", 0.9)),
    tok("1", 0.9, ("1", 0.9), ("2", 0.1)),
    tok(".", 0.9, (".", 0.9)),
)


@pytest.mark.parametrize(
    ("tokens", "text", "token", "p1", "p2", "position1"),
    [
        (QWEN, "<assistant 2>\nAssistant 1 is wrong.", "2", 0.3, 0.6, 1 / 3),
        (LLAMA3, "\n\nOutput: <assistant 1>", "1", 0.45, 0.5, 0.45 / 0.95),
        (SPIECE, "Assistant 2 is", " 2", 0.25, 0.75, 0.25),
        (ABSENT, "<assistant 2>", "2", 0.0, 0.95, 0.0),
        (SELF_ABSENT, "<assistant 1", "1", 0.8, 0.2, 0.8),
        (EQUAL, "<equal>\n1.", None, 0.0, 0.0, 0.5),
        ((), "", None, 0.0, 0.0, 0.5),
    ],
    ids=["qwen", "llama3", "leading-space", "other-digit-absent", "own-digit-absent", "equal", "empty"],
)
def test_digit_token_rule(
    tokens: tuple[TokenLogprob, ...], text: str, token: str | None, p1: float, p2: float, position1: float
) -> None:
    read = read_digits(tokens, text)
    assert read.token == token
    assert read.p1 == pytest.approx(p1)
    assert read.p2 == pytest.approx(p2)
    assert read.position1 == pytest.approx(position1)


def test_read_keeps_raw_alternatives_and_verdict_line() -> None:
    read = read_digits(QWEN, "\n<assistant 2>\nAssistant 1 is wrong.")
    assert read.line == "<assistant 2>"
    assert read.top == (("2", LN(0.6)), ("1", LN(0.3)), ("3", LN(0.01)))


def test_digit_after_the_verdict_line_is_not_read() -> None:
    """A digit on the explanation's lines is not the verdict: 0.5 each."""
    tokens = (
        tok("Both", 0.9),
        tok(" are", 0.9),
        tok(" fine", 0.9),
        tok("\n", 0.9),
        tok("2", 0.9, ("2", 0.9)),
    )
    assert read_digits(tokens, "Both are fine\n2").token is None


def test_digit_inside_a_longer_token_does_not_count() -> None:
    """Only a token that is the digit up to whitespace is read ("12", "2>" are not)."""
    tokens = (tok("12", 0.9, ("12", 0.9)), tok("2>", 0.9, ("2>", 0.9)), tok("1", 0.6, ("1", 0.6), ("2", 0.4)))
    read = read_digits(tokens, "122>1")
    assert read.token == "1"
    assert read.position1 == pytest.approx(0.6)


def _probs(position1: float) -> DigitProbs:
    return DigitProbs("1", position1, 1 - position1)


def test_edit_probability_per_order() -> None:
    """Forward shows the edit as Assistant 2, reverse as Assistant 1."""
    assert edit_probability(_probs(0.3), Order.FORWARD) == pytest.approx(0.7)
    assert edit_probability(_probs(0.3), Order.REVERSE) == pytest.approx(0.3)


def test_mean_cancels_a_constant_position_lean() -> None:
    """A judge 80% for position 2 whatever it reads, 10 points surer for the better edit."""
    forward, reverse = _probs(0.2 - 0.05), _probs(0.2 + 0.05)
    assert prefer_probability(forward, reverse) == pytest.approx((0.85 + 0.25) / 2)
    assert prefer_probability(forward, reverse) == pytest.approx(0.55)
    # the same judge on a worse edit
    assert prefer_probability(_probs(0.25), _probs(0.15)) == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("mean", "margin", "accepted"),
    [(0.5, 0.0, False), (0.5000001, 0.0, True), (0.55, 0.05, False), (0.56, 0.05, True), (0.3, 0.0, False)],
)
def test_margin(mean: float, margin: float, accepted: bool) -> None:
    assert prob_accepts(mean, margin) is accepted


def test_equal_in_both_orders_is_no_preference() -> None:
    none = read_digits(EQUAL, "<equal>")
    assert prefer_probability(none, none) == 0.5
    assert not prob_accepts(0.5)


@pytest.mark.parametrize(
    ("position1", "margin", "decided"), [(1.0, 0.0, True), (0.99, 0.0, False), (0.9, 0.05, True)]
)
def test_early_exit_only_when_the_reverse_cannot_save_it(
    position1: float, margin: float, decided: bool
) -> None:
    assert prob_cannot_accept(_probs(position1), margin) is decided


def test_request_asks_for_logprobs_and_the_key_names_them() -> None:
    plain, prob = GenParams(), GenParams(top_logprobs=10)
    assert "logprobs" not in plain.as_body()
    assert prob.as_body()["logprobs"] is True
    assert prob.as_body()["top_logprobs"] == 10


# The OpenAI chat shape as vLLM sends it (bytes included), and the ways a server says "none".
VLLM_LOGPROBS = {
    "content": [
        {"token": "<", "logprob": -0.01, "bytes": [60], "top_logprobs": [{"token": "<", "logprob": -0.01}]},
        {
            "token": "2",
            "logprob": -0.5,
            "bytes": [50],
            "top_logprobs": [{"token": "2", "logprob": -0.5, "bytes": [50]}, {"token": "1", "logprob": -1.2}],
        },
    ]
}


def test_parse_openai_chat_logprobs() -> None:
    tokens = parse_chat_logprobs(VLLM_LOGPROBS)
    assert tokens == (
        TokenLogprob("<", -0.01, (("<", -0.01),)),
        TokenLogprob("2", -0.5, (("2", -0.5), ("1", -1.2))),
    )
    assert logprobs_from_json(logprobs_to_json(tokens)) == tokens


@pytest.mark.parametrize("value", [None, {"content": None}, {"refusal": None}])
def test_no_logprobs_is_none(value: object) -> None:
    assert parse_chat_logprobs(value) is None


@pytest.mark.parametrize(
    "value",
    [
        [],
        {"content": "2"},
        {"content": [{"token": 2, "logprob": -1.0}]},
        {"content": [{"token": "2", "logprob": "-1"}]},
        {"content": [{"token": "2", "logprob": 0.5}]},
        {"content": [{"token": "2", "logprob": float("nan")}]},
        {"content": [{"token": "2", "logprob": -1.0, "top_logprobs": {"1": -1}}]},
        {"content": [{"token": "2", "logprob": True}]},
    ],
)
def test_malformed_logprobs_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_chat_logprobs(value)


def test_unreadable_stored_logprobs() -> None:
    with pytest.raises(ValueError):
        logprobs_from_json('{"a": 1}')


# Recorded: llama-cpp-python 0.3.36 serving the embedded Qwen2.5-Coder-0.5B, chat logprobs as it
# returns them (top 5 kept, logprobs rounded to 4 places), for an answer of "<equal>".
RECORDED_QWEN_EQUAL = {
    "content": [
        {
            "token": "<",
            "logprob": -0.3353,
            "top_logprobs": [
                {"token": "<", "logprob": -0.3353},
                {"token": "Assistant", "logprob": -2.2816},
                {"token": "The", "logprob": -2.6285},
                {"token": "equal", "logprob": -3.422},
                {"token": "Equal", "logprob": -4.5509},
            ],
        },
        {
            "token": "equal",
            "logprob": -0.2676,
            "top_logprobs": [
                {"token": "equal", "logprob": -0.2676},
                {"token": "assistant", "logprob": -2.1628},
                {"token": "Assistant", "logprob": -2.7161},
                {"token": "less", "logprob": -4.6322},
                {"token": "answer", "logprob": -5.1014},
            ],
        },
        {
            "token": ">",
            "logprob": -0.3074,
            "top_logprobs": [
                {"token": ">", "logprob": -0.3074},
                {"token": ">\n\n", "logprob": -1.7533},
                {"token": ">\n", "logprob": -2.5169},
                {"token": "", "logprob": -5.8066},
                {"token": ">.", "logprob": -6.0602},
            ],
        },
    ],
    "refusal": None,
}


def test_recorded_qwen_equal_counts_half_each() -> None:
    tokens = parse_chat_logprobs(RECORDED_QWEN_EQUAL)
    assert tokens is not None
    read = read_digits(tokens, "<equal>")
    assert (read.token, read.p1, read.p2, read.position1, read.line) == (None, 0.0, 0.0, 0.5, "<equal>")
