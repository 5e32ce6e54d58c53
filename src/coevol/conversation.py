"""Multi-turn refinement plan: which assistant turns to refine and what the agents see for each.

Pure functions. Paper Section 3.2 and Appendix B: turn t is refined with the already-refined turns
before it as history, and only the most recent rounds (the current user turn and the rounds
before it, 3 in all by default) are shown. A system message stays visible as context; tool and
function turns are shown but never rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coevol.domain import Turn
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet

__all__ = ["ConversationSettings", "estimate_tokens", "refinable_turns", "tokens_for_chars", "window_sample"]


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """Bounds on the work per conversation."""

    window_rounds: int = 3
    max_turns: int | None = None  # refine at most this many assistant turns
    max_tokens: int | None = None  # stop once the conversation so far passes this many tokens


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token for English); used only for bounds."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """``estimate_tokens`` for a text known only by its length (the dry run measures, not renders)."""
    return (chars + 3) // 4


def refinable_turns(turns: Sequence[Turn], settings: ConversationSettings) -> list[int]:
    """Indices of the assistant turns to refine, in order, within the configured bounds.

    An assistant turn needs a user turn before it and non-empty text (tool-call-only turns are
    skipped). Refinement stops at ``max_turns`` turns or once the text up to and including the
    turn (an alpaca ``input`` included) passes ``max_tokens``. Lengths are those of the original
    texts, so the plan is known before the first request and does not depend on the edits.
    """
    chosen: list[int] = []
    seen_user = False
    running = 0
    for i, turn in enumerate(turns):
        running += estimate_tokens(turn.content) + estimate_tokens(turn.input)
        if turn.role == "user":
            seen_user = True
        if turn.role != "assistant" or not seen_user or not turn.content.strip():
            continue
        if settings.max_tokens is not None and running > settings.max_tokens:
            break
        if settings.max_turns is not None and len(chosen) >= settings.max_turns:
            break
        chosen.append(i)
    return chosen


def window_sample(prompts: PromptSet, turns: Sequence[Turn], t: int, window_rounds: int = 3) -> Sample:
    """The sample the agents see when refining assistant turn ``t``.

    A first-round turn with no system message is exactly the paper's single-turn sample
    (instruction, input, response). Otherwise the instruction lists the system message and the
    visible earlier turns, one ``history_turn`` each, ending with the current user turn.
    """
    current = max(i for i in range(t) if turns[i].role == "user")
    user_starts = [i for i in range(current) if turns[i].role == "user"]
    earlier = user_starts[-(window_rounds - 1) :] if window_rounds > 1 else []
    keep_from = earlier[0] if earlier else current
    system = [turn for turn in turns[:t] if turn.role == "system"]
    visible = [turn for turn in turns[keep_from:t] if turn.role != "system"]
    user = turns[current]
    if not system and len(visible) == 1:
        return Sample(user.content, user.input, turns[t].content)
    lines = [
        prompts.render("history_turn", role=turn.role.upper(), content=turn.content)
        for turn in [*system, *visible]
    ]
    return Sample("\n".join(lines), user.input, turns[t].content)
