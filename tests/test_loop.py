"""Algorithm 1 against a deterministic OpenAI-compatible server over loopback HTTP.

The server's editor appends " [edit]" and its judge prefers the edit while it carries at most
``n`` edit marks, so the expected final response, accepted rounds and request counts follow from
Eq. 4 and K alone.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from coevol.domain import StopReason
from coevol.loop import LoopSettings, coevolve
from coevol.prompts.render import Sample
from coevol.testing import FakeOpenAIServer, RecordedRequest
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to, identify_role

from .conftest import make_engine

SAMPLE = Sample("Name a prime number.", "", "9")


def roles(requests: list[RecordedRequest]) -> list[str]:
    return [identify_role(r.body["messages"]) for r in requests]


def overlap(a: RecordedRequest, b: RecordedRequest) -> bool:
    assert a.end is not None and b.end is not None
    return a.start < b.end and b.start < a.end


async def run(server: FakeOpenAIServer, settings: LoopSettings, **config: Any) -> Any:
    engine = await make_engine(server, **config)
    try:
        return await coevolve(SAMPLE, engine.dispatcher, engine.prompts, settings)
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    ("accept", "k", "rounds", "iterations", "stop"),
    [
        (0, 3, 0, 1, StopReason.TURNED_DOWN),
        (1, 3, 1, 2, StopReason.TURNED_DOWN),
        (2, 3, 2, 3, StopReason.TURNED_DOWN),
        (3, 3, 3, 3, StopReason.MAX_ROUNDS),
        (9, 3, 3, 3, StopReason.MAX_ROUNDS),
        (9, 1, 1, 1, StopReason.MAX_ROUNDS),
        (1, 2, 1, 2, StopReason.TURNED_DOWN),
    ],
)
async def test_final_response_and_rounds_follow_eq4_and_k(
    accept: int, k: int, rounds: int, iterations: int, stop: StopReason
) -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(accept))) as server:
        result = await run(server, LoopSettings(max_rounds=k))
        assert result.response == "9" + EDIT_MARK * rounds
        assert result.accepted_edits == rounds
        assert result.stop_reason is stop
        assert len(result.iterations) == iterations
        assert [it.accepted for it in result.iterations] == [i < rounds for i in range(iterations)]
        assert len(server.requests) == 8 * iterations  # 4 debate, advisor, editor, 2 judge


async def test_each_iteration_sends_eight_requests_with_the_pairs_in_flight_together() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1)), latency=0.05) as server:
        result = await run(server, LoopSettings(max_rounds=3))
        reqs = sorted(server.requests, key=lambda r: r.start)
        assert len(result.iterations) == 2 and len(reqs) == 16
        for i in range(2):
            it = reqs[8 * i : 8 * i + 8]
            assert sorted(roles(it[0:2])) == ["critical", "positive"]
            assert sorted(roles(it[2:4])) == ["critical", "positive"]
            assert roles(it[4:6]) == ["advisor", "editor"]
            assert roles(it[6:8]) == ["judge", "judge"]
            for a, b in (it[0:2], it[2:4], it[6:8]):
                assert overlap(a, b), "the two debaters / judge orders must be in flight together"
            # Steps follow each other: round 1, round 2, advisor, editor, judges.
            steps = [it[0:2], it[2:4], it[4:5], it[5:6], it[6:8]]
            for before, after in itertools.pairwise(steps):
                last_end = max(r.end or 0.0 for r in before)
                assert last_end <= min(r.start for r in after)


async def test_memory_handoffs_are_visible_in_the_requests() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        result = await run(server, LoopSettings(max_rounds=3))
        first = result.iterations[0]
        assert first.debate is not None and first.suggestions is not None
        d = first.debate
        pos_pred, crt_pred = d.positive_stage1.text, d.critical_stage1.text
        pos_free, crt_free = d.positive_stage2.text, d.critical_stage2.text
        by_role: dict[str, list[list[dict[str, str]]]] = {}
        for r in server.requests:
            by_role.setdefault(identify_role(r.body["messages"]), []).append(r.body["messages"])

        pos1, pos2 = by_role["positive"][0], by_role["positive"][1]
        crt1, crt2 = by_role["critical"][0], by_role["critical"][1]
        assert [m["role"] for m in pos1] == ["system", "user"]
        # Round 2 keeps the debater's own round-1 exchange and shows the other's review.
        assert pos2[:2] == pos1 and crt2[:2] == crt1
        assert pos2[2] == {"role": "assistant", "content": pos_pred}
        assert crt2[2] == {"role": "assistant", "content": crt_pred}
        assert pos2[3]["content"].startswith(f"### Review from others:\n{crt_pred}\n\n")
        assert crt2[3]["content"].startswith(f"### Review from others:\n{pos_pred}\n\n")

        advisor = by_role["advisor"][0][-1]["content"]
        expected = (
            f"### Reviewer 1:\n{pos_pred}\n\n### Reviewer 2:\n{crt_pred}\n\n"
            f"### Reviewer 1:\n{pos_free}\n\n### Reviewer 2:\n{crt_free}\n\n"
        )
        assert expected in advisor
        editor = by_role["editor"][0][-1]["content"]
        assert editor.startswith(
            f"### Writing Suggestions:\n{first.suggestions.text}\n\n### Previous Response:\n9\n\n"
        )

        # After an accepted edit every agent starts afresh on the accepted response.
        second_pos = by_role["positive"][2]
        assert [m["role"] for m in second_pos] == ["system", "user"]
        assert f"### Response:\n9{EDIT_MARK}\n\n" in second_pos[1]["content"]
        assert len(by_role["judge"]) == 4
        judge = by_role["judge"][0][-1]["content"]
        assert "[The Start of Assistant 1's Response]\n9\n" in judge


async def test_unparseable_verdict_is_asked_again_then_recorded() -> None:
    def responder(body: dict[str, Any]) -> str:
        if identify_role(body["messages"]) == "judge":
            return "Both are fine, hard to say."
        return CoEvolResponder()(body)

    async with FakeOpenAIServer(responder) as server:
        result = await run(server, LoopSettings(max_rounds=3))
        assert result.response == "9"
        assert result.accepted_edits == 0
        assert result.stop_reason is StopReason.JUDGE_UNPARSEABLE
        judgment = result.iterations[0].judge
        assert judgment is not None and not judgment.decided
        assert [len(o.attempts) for o in judgment.orders] == [3, 3]  # first ask + 2 re-asks, per order
        assert all(o.error and "not found" in o.error for o in judgment.orders)
        assert roles(server.requests).count("judge") == 6
        assert len(server.requests) == 12


async def test_merge_system_sends_no_system_role() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        result = await run(server, LoopSettings(), merge_system=True)
        assert result.stop_reason is StopReason.TURNED_DOWN
        for r in server.requests:
            msgs = r.body["messages"]
            assert all(m["role"] != "system" for m in msgs)
        pos = next(r for r in server.requests if identify_role(r.body["messages"]) == "positive")
        assert pos.body["messages"][0]["content"].startswith("You are an optimistic person")


async def test_sampling_defaults_are_the_papers() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        await run(server, LoopSettings())
        for r in server.requests:
            assert (r.body["max_tokens"], r.body["temperature"], r.body["top_p"]) == (1000, 0.0, 1.0)
            assert r.body["model"] == "fake-model"


async def test_judge_early_exit_skips_the_second_order_only_when_it_cannot_matter() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        result = await run(server, LoopSettings(judge_early_exit=True))
        assert result.accepted_edits == 1 and result.stop_reason is StopReason.TURNED_DOWN
        # round 1 accepted: both orders asked; round 2 rejected by the first order alone.
        assert roles(server.requests).count("judge") == 3
        last = result.iterations[-1].judge
        assert last is not None and last.skipped_reverse
