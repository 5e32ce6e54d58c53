"""``fill`` cuts each template at its slots once; the result is what one regex pass would give."""

from __future__ import annotations

from coevol.prompts.templates import fill


def test_slots_are_filled_and_unknown_slots_and_other_braces_stay() -> None:
    template = "[Q] {sample}\n{unknown} {} {{sample}} {Sample} {sample"
    assert fill(template, {"sample": "S"}) == "[Q] S\n{unknown} {} {S} {Sample} {sample"


def test_a_value_that_spells_a_slot_is_not_filled_again() -> None:
    assert fill("{a}|{b}", {"a": "{b}", "b": "{a}"}) == "{b}|{a}"


def test_the_same_template_fills_independently_each_time() -> None:
    template = "<{role}>: {content}"
    assert fill(template, {"role": "user", "content": "hi"}) == "<user>: hi"
    assert fill(template, {"role": "assistant"}) == "<assistant>: {content}"
    assert fill("", {"a": "x"}) == ""
    assert fill("no slots", {}) == "no slots"
