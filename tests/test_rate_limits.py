"""A few 429s do not stall a run: against the fake server, only the rejected requests wait."""

from __future__ import annotations

import asyncio
import itertools

from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import GenParams
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, RecordedRequest, first_attempt_faults

RETRY_AFTER = 3.0
CHAINS, STEPS = 40, 10  # 40 samples, each making 10 calls one after another, like the loop


async def chain(d: Dispatcher, c: int) -> list[str]:
    """One sample's calls in order: each is asked only once the one before it was answered."""
    return [
        (await d("judge", [{"role": "user", "content": f"sample {c} step {i}"}])).text for i in range(STEPS)
    ]


def sample_of(r: RecordedRequest) -> str:
    return str(r.body["messages"][0]["content"]).split(" step ")[0]


async def test_one_percent_429s_delay_only_the_rejected_requests() -> None:
    policy = first_attempt_faults([Fault(FaultKind.RATE_LIMIT, retry_after=RETRY_AFTER)], 0.01, seed=0)
    async with FakeOpenAIServer(latency=0.005, faults=policy) as server:
        backend = OpenAIHTTPBackend(server.base_url)
        async with backend:
            d = Dispatcher(
                {"judge": Route(backend, "fake-model", GenParams(max_tokens=8))},
                max_in_flight=64,
                retry=RetryPolicy(max_retries=2, max_retry_after=RETRY_AFTER),
            )
            answers = await asyncio.gather(*(chain(d, c) for c in range(CHAINS)))
        requests = list(server.requests)
    assert len(answers) == CHAINS and d.stats.failed_calls == 0
    limited = [r for r in requests if r.fault is not None]
    assert len(limited) == 4  # 1% of 400, as the seeded policy chooses
    assert d.stats.rate_limited == len(limited)
    first_429 = min(r.start for r in limited)
    # Each rejected request waited its own Retry-After ...
    for rejected in limited:
        retry = next(r for r in requests if r.body == rejected.body and r.fault is None)
        assert retry.start - rejected.start >= RETRY_AFTER - 0.05
    # ... and no other sample waited for it: in every sample without a 429, no two consecutive
    # requests are a backoff apart, though many of them were asked after the first 429.
    hit = {sample_of(r) for r in limited}
    clean = [r for r in requests if sample_of(r) not in hit]
    assert any(r.start > first_429 for r in clean)
    for sample in {sample_of(r) for r in clean}:
        times = sorted(r.start for r in clean if sample_of(r) == sample)
        assert len(times) == STEPS
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < RETRY_AFTER, (sample, gaps)
    assert d.stats.pauses == {}  # 1% is not a server-wide overload
