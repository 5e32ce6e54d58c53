"""The five CoEvol agents as async functions. Each receives an injected ``generate``.

Roles only build messages and read answers; which model serves them, caching, retries and
concurrency live in the engine. Every answer comes back as the trace keeps it (``coevol.domain``):
the text with the call's ``finish_reason``, so a cut-off answer is visible wherever it is read.
Memory is explicit: an agent's history is the message list it is given, so "refresh the memory of
all agents" (Algorithm 1, line 17) is simply not passing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal, TypeVar, get_args

from coevol.domain import (
    Answer,
    Completion,
    DebateTrace,
    Generate,
    JudgeOrderTrace,
    JudgeTrace,
    Message,
    Role,
)
from coevol.errors import LogprobsMissing, ParseError, UnusableAnswer
from coevol.prompts.render import Sample, messages, render_request, render_sample
from coevol.prompts.templates import PromptSet
from coevol.roles.prob import edit_probability, prob_cannot_accept, read_digits
from coevol.roles.verdict import (
    SCORE_RANGE,
    Order,
    cannot_accept,
    decide,
    order_scores,
    parse_score_pair,
    parse_verdict,
)

__all__ = [
    "JUDGE_KINDS",
    "JudgeKind",
    "advise",
    "advise_from_request",
    "advise_from_response",
    "clean_edit",
    "debate",
    "edit",
    "edit_from_request",
    "judge",
]

JudgeKind = Literal["verdict", "score", "prob"]
JUDGE_KINDS: tuple[JudgeKind, ...] = get_args(JudgeKind)

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


def _answer(completion: Completion, *, strip: bool = False) -> Answer:
    return Answer(completion.text.strip() if strip else completion.text, completion.finish_reason)


EMPTY_REASKS = 2
"""How often a debater, the advisor or the editor is asked again after an empty answer."""
_MAX_ATTEMPTS = 64  # stored empty answers replayed before fresh re-asks, at most


async def _ask(generate: Generate, role: Role, msgs: list[Message]) -> Completion:
    """A debater's, the advisor's or the editor's answer, never an empty one: an answer with no text
    is asked again (``attempt`` keys a new call, so the cache does not hand it back), and after
    ``EMPTY_REASKS`` fresh re-asks the call has failed, which fails the sample with the reason.

    Empty answers replayed from the store do not count: ``--retry-failed`` replays them for free
    and then asks anew. (The judge has its own re-asks for an answer without a verdict.)
    """
    fresh = 0
    for attempt in range(_MAX_ATTEMPTS):
        completion = await generate(role, msgs, attempt=attempt)
        if completion.text.strip():
            return completion
        fresh += not completion.cached
        if fresh > EMPTY_REASKS:
            break
    raise UnusableAnswer(f"the {role} answered an empty text {fresh} times")


async def debate(generate: Generate, prompts: PromptSet, sample: Sample) -> DebateTrace:
    """Two-stage debate: fixed positions, then free cross-evaluation; both debaters speak at once."""
    text = render_sample(prompts, sample)
    pos_sys, crt_sys = prompts["positive_system"], prompts["critical_system"]
    pos_task = prompts.render("positive_round1", sample=text)
    crt_task = prompts.render("critical_round1", sample=text)
    pos_pred, crt_pred = await _both(
        _ask(generate, Role.POSITIVE, messages(pos_sys, pos_task)),
        _ask(generate, Role.CRITICAL, messages(crt_sys, crt_task)),
    )
    # Stage 2: each debater keeps its own stage-1 exchange and reads the other's review.
    pos_memory: list[Message] = [
        {"role": "user", "content": pos_task},
        {"role": "assistant", "content": pos_pred.text},
    ]
    crt_memory: list[Message] = [
        {"role": "user", "content": crt_task},
        {"role": "assistant", "content": crt_pred.text},
    ]
    pos_free, crt_free = await _both(
        _ask(
            generate,
            Role.POSITIVE,
            messages(pos_sys, prompts.render("positive_round2", crt_pred=crt_pred.text), pos_memory),
        ),
        _ask(
            generate,
            Role.CRITICAL,
            messages(crt_sys, prompts.render("critical_round2", pos_pred=pos_pred.text), crt_memory),
        ),
    )
    return DebateTrace(_answer(pos_pred), _answer(crt_pred), _answer(pos_free), _answer(crt_free))


async def advise(generate: Generate, prompts: PromptSet, sample: Sample, dbt: DebateTrace) -> Answer:
    """Eq. 9: at most three suggestions distilled from the debate (Reviewer 1/2/1/2)."""
    task = prompts.render(
        "advisor",
        sample=render_sample(prompts, sample),
        pos_pred=dbt.positive_stage1.text,
        crt_pred=dbt.critical_stage1.text,
        pos_free=dbt.positive_stage2.text,
        crt_free=dbt.critical_stage2.text,
    )
    return _answer(await _ask(generate, Role.ADVISOR, messages(prompts["advisor_system"], task)), strip=True)


async def advise_from_response(generate: Generate, prompts: PromptSet, sample: Sample) -> Answer:
    """Ablation "advise + edit": suggestions from the sample with its response, no debate."""
    task = prompts.render("advisor_resp", sample=render_sample(prompts, sample))
    return _answer(await _ask(generate, Role.ADVISOR, messages(prompts["advisor_system"], task)), strip=True)


async def advise_from_request(generate: Generate, prompts: PromptSet, sample: Sample) -> Answer:
    """Ablation "advise (w/o resp) + edit": the advisor never sees the response."""
    task = prompts.render("advisor_noresp", sample_request=render_request(prompts, sample))
    return _answer(await _ask(generate, Role.ADVISOR, messages(prompts["advisor_system"], task)), strip=True)


def clean_edit(text: str) -> str:
    """The editor's reply is the new response: drop an echoed ``### Response:`` header, trim."""
    text = text.strip()
    header = "### Response:"
    if text.startswith(header):
        text = text[len(header) :].strip()
    return text


async def edit(generate: Generate, prompts: PromptSet, sample: Sample, suggestions: str) -> Answer:
    """Eq. 2: rewrite the previous response following the suggestions; the raw answer (see
    ``clean_edit`` for the response it proposes)."""
    task = prompts.render(
        "editor",
        adv_sugg=suggestions,
        pre_resp=sample.response,
        sample=render_sample(prompts, sample),
        sample_request=render_request(prompts, sample),
    )
    return _answer(await _ask(generate, Role.EDITOR, messages(prompts["editor_system"], task)))


async def edit_from_request(generate: Generate, prompts: PromptSet, sample: Sample) -> Answer:
    """Ablation "edit": answer the request afresh, without suggestions or the old response."""
    task = prompts.render("editor_nosugg", sample_request=render_request(prompts, sample))
    return _answer(await _ask(generate, Role.EDITOR, messages(prompts["editor_system"], task)))


NO_LOGPROBS = (
    "the judge's server returned no logprobs, which --judge prob reads (it ignores the 'logprobs' "
    "request field); use --judge verdict with this server"
)


def _read_prob(completion: Completion, order: Order, result: JudgeOrderTrace) -> None:
    """``--judge prob``: the order's probabilities from the answer's logprobs; no re-ask needed,
    since an answer without a position digit reads as no preference (0.5 each)."""
    if completion.logprobs is None:
        raise LogprobsMissing(NO_LOGPROBS)
    result.probs = read_digits(completion.logprobs, completion.text)
    result.verdict = result.probs.line
    q = edit_probability(result.probs, order)
    result.scores = (1.0 - q, q)


async def _judge_order(
    generate: Generate,
    prompts: PromptSet,
    sample: Sample,
    edited: str,
    order: Order,
    kind: JudgeKind,
    reasks: int,
) -> JudgeOrderTrace:
    name = ("judge_score" if kind == "score" else "judge") + ("" if order is Order.FORWARD else "_reverse")
    task = prompts.render(
        name, sample_request=render_request(prompts, sample), pre_resp=sample.response, new_resp=edited
    )
    msgs = messages(prompts["judge_system"], task)
    result = JudgeOrderTrace(order.value)
    for attempt in range(reasks + 1):
        completion = await generate(Role.JUDGE, msgs, attempt=attempt)
        answer = _answer(completion)
        result.attempts.append(answer)
        try:
            if kind == "prob":
                _read_prob(completion, order, result)
            elif kind == "verdict":
                verdict = parse_verdict(answer.text)
                result.verdict = verdict.value
                result.scores = order_scores(verdict, order)
            else:
                first, second = parse_score_pair(answer.text)
                result.verdict = f"{first:g} {second:g}"
                result.scores = (first, second) if order is Order.FORWARD else (second, first)
            result.error = None
            return result
        except ParseError as exc:
            result.error = str(exc)
    return result


def _cannot_accept(forward: JudgeOrderTrace, kind: JudgeKind, margin: float) -> bool:
    """``--judge-early-exit``: the first order alone already rejects the edit."""
    if forward.scores is None:
        return False
    if kind == "prob":
        return forward.probs is not None and prob_cannot_accept(forward.probs, margin)
    span = 1.0 if kind == "verdict" else SCORE_RANGE[1] - SCORE_RANGE[0]  # what one order can move
    return cannot_accept(forward.scores, span)


async def judge(
    generate: Generate,
    prompts: PromptSet,
    sample: Sample,
    edited: str,
    *,
    kind: JudgeKind = "verdict",
    reasks: int = 2,
    early_exit: bool = False,
    margin: float = 0.0,
) -> JudgeTrace:
    """Eq. 3-4: compare previous (``sample.response``) and edited in both orders.

    Both orders run concurrently unless ``early_exit``, which asks the forward order first and
    skips the reverse one when it cannot change the outcome. ``kind="prob"`` reads each order's
    probability from the logprobs (``coevol.roles.prob``) and keeps the edit when their mean is
    above 0.5 + ``margin``; a server that returns no logprobs raises ``LogprobsMissing``.
    """
    args = (generate, prompts, sample, edited)
    prob_margin = margin if kind == "prob" else None
    if early_exit:
        forward = await _judge_order(*args, Order.FORWARD, kind, reasks)
        if forward.scores is not None and _cannot_accept(forward, kind, margin):
            return JudgeTrace(
                [forward], forward.scores[0], forward.scores[1], skipped_reverse=True, margin=prob_margin
            )
        reverse = await _judge_order(*args, Order.REVERSE, kind, reasks)
    else:
        forward, reverse = await _both(
            _judge_order(*args, Order.FORWARD, kind, reasks),
            _judge_order(*args, Order.REVERSE, kind, reasks),
        )
    if forward.scores is None or reverse.scores is None:
        return JudgeTrace([forward, reverse])
    decision = decide(forward.scores, reverse.scores)
    return JudgeTrace([forward, reverse], decision.previous, decision.edited, margin=prob_margin)
