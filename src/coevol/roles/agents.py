"""The five CoEvol agents as async functions. Each receives an injected ``generate``.

Roles only build messages and read answers; which model serves them, caching, retries and
concurrency live in the engine. Memory is explicit: an agent's history is the message list it is
given, so "refresh the memory of all agents" (Algorithm 1, line 17) is simply not passing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from coevol.errors import ParseError
from coevol.llm.types import Generate, Message
from coevol.prompts.render import Sample, messages, render_request, render_sample
from coevol.prompts.templates import PromptSet
from coevol.roles.verdict import (
    Order,
    cannot_accept,
    decide,
    order_scores,
    parse_score_pair,
    parse_verdict,
)

__all__ = [
    "Debate",
    "JudgeKind",
    "JudgeOrder",
    "Judgment",
    "advise",
    "advise_from_request",
    "advise_from_response",
    "clean_edit",
    "debate",
    "edit",
    "edit_from_request",
    "judge",
]

JudgeKind = Literal["verdict", "score"]

_A = TypeVar("_A")
_B = TypeVar("_B")


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Two calls at once. When one fails the other is cancelled: the sample has failed, and a call
    left running would go on paying (and retrying) for an answer nobody reads."""
    a, b = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        await asyncio.wait((a, b), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in (a, b):
            task.cancel()  # a no-op for a finished task
    errors = [task.exception() for task in (a, b) if task.done() and not task.cancelled()]
    for error in errors:  # every exception read, so asyncio has none to report as lost
        if error is not None:
            raise error
    return a.result(), b.result()


POSITIVE, CRITICAL, ADVISOR, EDITOR, JUDGE = "positive", "critical", "advisor", "editor", "judge"


@dataclass(frozen=True, slots=True)
class Debate:
    """G_dbt: the four arguments in the paper's order (Eq. 5-8)."""

    pos_pred: str
    crt_pred: str
    pos_free: str
    crt_free: str

    def to_dict(self) -> dict[str, str]:
        return {
            "positive_round1": self.pos_pred,
            "critical_round1": self.crt_pred,
            "positive_round2": self.pos_free,
            "critical_round2": self.crt_free,
        }


async def debate(generate: Generate, prompts: PromptSet, sample: Sample) -> Debate:
    """Two-stage debate: fixed positions, then free cross-evaluation; both debaters speak at once."""
    text = render_sample(prompts, sample)
    pos_sys, crt_sys = prompts["positive_system"], prompts["critical_system"]
    pos_task = prompts.render("positive_round1", sample=text)
    crt_task = prompts.render("critical_round1", sample=text)
    pos_pred, crt_pred = await _both(
        generate(POSITIVE, messages(pos_sys, pos_task)),
        generate(CRITICAL, messages(crt_sys, crt_task)),
    )
    # Round 2: each debater keeps its own round-1 exchange and reads the other's review.
    pos_memory: list[Message] = [
        {"role": "user", "content": pos_task},
        {"role": "assistant", "content": pos_pred.text},
    ]
    crt_memory: list[Message] = [
        {"role": "user", "content": crt_task},
        {"role": "assistant", "content": crt_pred.text},
    ]
    pos_free, crt_free = await _both(
        generate(
            POSITIVE,
            messages(pos_sys, prompts.render("positive_round2", crt_pred=crt_pred.text), pos_memory),
        ),
        generate(
            CRITICAL,
            messages(crt_sys, prompts.render("critical_round2", pos_pred=pos_pred.text), crt_memory),
        ),
    )
    return Debate(pos_pred.text, crt_pred.text, pos_free.text, crt_free.text)


async def advise(generate: Generate, prompts: PromptSet, sample: Sample, dbt: Debate) -> str:
    """Eq. 9: at most three suggestions distilled from the debate (Reviewer 1/2/1/2)."""
    task = prompts.render(
        "advisor",
        sample=render_sample(prompts, sample),
        pos_pred=dbt.pos_pred,
        crt_pred=dbt.crt_pred,
        pos_free=dbt.pos_free,
        crt_free=dbt.crt_free,
    )
    return (await generate(ADVISOR, messages(prompts["advisor_system"], task))).text.strip()


async def advise_from_response(generate: Generate, prompts: PromptSet, sample: Sample) -> str:
    """Ablation "advise + edit": suggestions from the sample with its response, no debate."""
    task = prompts.render("advisor_resp", sample=render_sample(prompts, sample))
    return (await generate(ADVISOR, messages(prompts["advisor_system"], task))).text.strip()


async def advise_from_request(generate: Generate, prompts: PromptSet, sample: Sample) -> str:
    """Ablation "advise (w/o resp) + edit": the advisor never sees the response."""
    task = prompts.render("advisor_noresp", sample_request=render_request(prompts, sample))
    return (await generate(ADVISOR, messages(prompts["advisor_system"], task))).text.strip()


def clean_edit(text: str) -> str:
    """The editor's reply is the new response: drop an echoed ``### Response:`` header, trim."""
    text = text.strip()
    header = "### Response:"
    if text.startswith(header):
        text = text[len(header) :].strip()
    return text


async def edit(generate: Generate, prompts: PromptSet, sample: Sample, suggestions: str) -> str:
    """Eq. 2: rewrite the previous response following the suggestions."""
    task = prompts.render(
        "editor",
        adv_sugg=suggestions,
        pre_resp=sample.response,
        sample=render_sample(prompts, sample),
        sample_request=render_request(prompts, sample),
    )
    return clean_edit((await generate(EDITOR, messages(prompts["editor_system"], task))).text)


async def edit_from_request(generate: Generate, prompts: PromptSet, sample: Sample) -> str:
    """Ablation "edit": answer the request afresh, without suggestions or the old response."""
    task = prompts.render("editor_nosugg", sample_request=render_request(prompts, sample))
    return clean_edit((await generate(EDITOR, messages(prompts["editor_system"], task))).text)


@dataclass(slots=True)
class JudgeOrder:
    """One order's judgment: every raw answer (re-asks included) and the parsed result."""

    order: Order
    raws: list[str] = field(default_factory=list)
    parsed: str | None = None
    scores: tuple[float, float] | None = None  # (previous, edited) for this order
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order.value,
            "verdict": self.parsed,
            "scores": {"previous": self.scores[0], "edited": self.scores[1]} if self.scores else None,
            "attempts": len(self.raws),
            "raw": self.raws,
            "error": self.error,
        }


@dataclass(slots=True)
class Judgment:
    """Both orders and the Eq. 4 decision; ``failed`` when a verdict stayed unparseable."""

    orders: list[JudgeOrder]
    previous: float | None = None
    edited: float | None = None
    skipped_reverse: bool = False

    @property
    def failed(self) -> bool:
        return self.previous is None

    @property
    def accept(self) -> bool:
        return self.previous is not None and self.edited is not None and self.edited > self.previous


async def _judge_order(
    generate: Generate,
    prompts: PromptSet,
    sample: Sample,
    edited: str,
    order: Order,
    kind: JudgeKind,
    reasks: int,
) -> JudgeOrder:
    name = ("judge" if kind == "verdict" else "judge_score") + ("" if order is Order.FORWARD else "_reverse")
    task = prompts.render(
        name, sample_request=render_request(prompts, sample), pre_resp=sample.response, new_resp=edited
    )
    msgs = messages(prompts["judge_system"], task)
    result = JudgeOrder(order)
    for attempt in range(reasks + 1):
        raw = (await generate(JUDGE, msgs, attempt=attempt)).text
        result.raws.append(raw)
        try:
            if kind == "verdict":
                verdict = parse_verdict(raw)
                result.parsed = verdict.value
                result.scores = order_scores(verdict, order)
            else:
                first, second = parse_score_pair(raw)
                result.parsed = f"{first:g} {second:g}"
                result.scores = (first, second) if order is Order.FORWARD else (second, first)
            result.error = None
            return result
        except ParseError as exc:
            result.error = str(exc)
    return result


async def judge(
    generate: Generate,
    prompts: PromptSet,
    sample: Sample,
    edited: str,
    *,
    kind: JudgeKind = "verdict",
    reasks: int = 2,
    early_exit: bool = False,
) -> Judgment:
    """Eq. 3-4: compare previous (``sample.response``) and edited in both orders.

    Both orders run concurrently unless ``early_exit``, which asks the forward order first and
    skips the reverse one when it cannot change the outcome.
    """
    args = (generate, prompts, sample, edited)
    if early_exit:
        forward = await _judge_order(*args, Order.FORWARD, kind, reasks)
        span = 1.0 if kind == "verdict" else 10.0
        if forward.scores is not None and cannot_accept(forward.scores, span):
            return Judgment([forward], forward.scores[0], forward.scores[1], skipped_reverse=True)
        reverse = await _judge_order(*args, Order.REVERSE, kind, reasks)
    else:
        forward, reverse = await _both(
            _judge_order(*args, Order.FORWARD, kind, reasks),
            _judge_order(*args, Order.REVERSE, kind, reasks),
        )
    if forward.scores is None or reverse.scores is None:
        return Judgment([forward, reverse])
    decision = decide(forward.scores, reverse.scores)
    return Judgment([forward, reverse], decision.previous, decision.edited)
