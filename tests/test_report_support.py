"""Handcrafted trace records for the report tests (no model, no server)."""

from __future__ import annotations

from pathlib import Path

import orjson

from coevol.domain import (
    Answer,
    DebateTrace,
    Failure,
    IterationTrace,
    JudgeOrderTrace,
    JudgeTrace,
    RoleRoute,
    Status,
    StopReason,
    TraceRecord,
    TurnTrace,
)
from coevol.llm.types import Usage

_SCORES = {"assistant 1": (1.0, 0.0), "assistant 2": (0.0, 1.0), "equal": (1.0, 1.0)}


def order(name: str, verdict: str | None, raw: str | None = None) -> JudgeOrderTrace:
    """One judge order whose verdict is in position terms; scores follow the runner's convention."""
    text = raw if raw is not None else (f"<{verdict}>" if verdict else "I cannot decide.")
    if verdict is None:
        return JudgeOrderTrace(name, [Answer(text, "stop")], None, None, "no verdict")
    first, second = _SCORES[verdict]
    scores = (first, second) if name == "forward" else (second, first)
    return JudgeOrderTrace(name, [Answer(text, "stop")], verdict, scores)


def iteration(
    n: int,
    previous: str,
    edited: str,
    forward: str | None,
    reverse: str | None,
    *,
    suggestions: str = "1. Add an example.\n2. Explain the terms.",
) -> IterationTrace:
    judge = JudgeTrace([order("forward", forward), order("reverse", reverse)])
    fs, rs = judge.orders[0].scores, judge.orders[1].scores
    accepted = False
    if fs is not None and rs is not None:
        judge.score_previous, judge.score_edited = (fs[0] + rs[0]) / 2, (fs[1] + rs[1]) / 2
        accepted = judge.score_edited > judge.score_previous
    return IterationTrace(
        iteration=n,
        previous=previous,
        debate=DebateTrace(
            Answer("It is fine.", "stop"),
            Answer("It lacks detail.", "stop"),
            Answer("Agreed, mostly.", "stop"),
            Answer("Still thin.", "stop"),
        ),
        suggestions=Answer(suggestions, "stop"),
        edit=Answer("[Edited Response]\n" + edited, "stop"),
        edited=edited,
        judge=judge,
        accepted=accepted,
        usage={"judge": Usage(10, 2, 2)},
    )


def record(
    index: int,
    verdicts: list[tuple[str | None, str | None]],
    *,
    instruction: str = "Explain photosynthesis.",
    original: str = "Plants make food.",
    suggestions: str = "1. Add an example.\n2. Explain the terms.",
    status: Status | None = None,
) -> TraceRecord:
    """A record with one turn and one iteration per (forward, reverse) verdict pair."""
    its = []
    current = original
    for n, (f, r) in enumerate(verdicts, 1):
        edited = current + " More words here."
        it = iteration(n, current, edited, f, r, suggestions=suggestions)
        its.append(it)
        if it.accepted:
            current = edited
        else:
            break
    accepted = sum(it.accepted for it in its)
    last = its[-1] if its else None
    if last is not None and last.judge is not None and any(o.scores is None for o in last.judge.orders):
        stop = StopReason.JUDGE_UNPARSEABLE
    else:
        stop = StopReason.TURNED_DOWN
    turn = TurnTrace(0, instruction, "", original, current, accepted, stop, its)
    return TraceRecord(
        index=index,
        line=index + 1,
        status=status or (Status.REFINED if accepted else Status.KEPT),
        accepted_edits=accepted,
        turns=[turn],
        usage={"judge": Usage(100, 20, 2 * len(its)), "editor": Usage(50, 30, len(its))},
        roles={"judge": RoleRoute("tiny-judge", "http://127.0.0.1:1/v1"), "editor": RoleRoute("ed", "x")},
    )


def failed(index: int) -> TraceRecord:
    turn = TurnTrace(
        0, "Say hi.", "", "hi", "hi", 0, StopReason.ERROR, [], Failure("ServerError", "HTTP 500")
    )
    return TraceRecord(index, index + 1, Status.FAILED, 0, [turn], failure=Failure("ServerError", "HTTP 500"))


def write_trace(output: Path, records: list[TraceRecord]) -> Path:
    output.write_text("[]")
    trace = output.with_name(output.name + ".trace.jsonl")
    trace.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records))
    return trace


def test_records_round_trip_through_the_schema() -> None:
    r = record(0, [("assistant 2", "assistant 1")])
    assert TraceRecord.from_dict(orjson.loads(orjson.dumps(r.to_dict()))) == r
    assert r.accepted_edits == 1
