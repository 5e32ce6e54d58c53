"""Dispatcher, AdaptiveLimit, TokenBucket and RetryPolicy against a scripted in-memory backend."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.engine.endpoints import EndpointGroup
from coevol.engine.limits import AdaptiveLimit, TokenBucket
from coevol.errors import (
    AuthenticationError,
    BadRequestError,
    LLMError,
    RateLimitError,
    ServerError,
)
from coevol.llm.types import ChatRequest, Completion, GenParams
from coevol.store.sqlite import Store
from coevol.testing import ScriptedBackend

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)
MSGS = [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "Which is better?"}]

Script = Callable[[ChatRequest, int], Completion | LLMError]


def failing(first: int, error: Callable[[], LLMError]) -> Script:
    """Raise ``error()`` for the first ``first`` calls, then answer."""

    def script(request: ChatRequest, n: int) -> Completion | LLMError:
        return error() if n < first else Completion("fine", 3, 2, "stop")

    return script


def dispatcher(backend: ScriptedBackend, store: Store | None = None, **kwargs: object) -> Dispatcher:
    routes = {"judge": Route(backend, "m1", GenParams(max_tokens=50)), "editor": Route(backend, "m2")}
    kwargs.setdefault("retry", FAST)
    return Dispatcher(routes, store=store, **kwargs)  # type: ignore[arg-type]


def server_limit(d: Dispatcher) -> AdaptiveLimit:
    """The in-flight limit of the one server both roles share."""
    (server,) = d.groups["judge"].servers
    return server.limit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "run.coevol.db")
    yield s
    s.close()


# --- store: replay, durability, failures -----------------------------------------------------------


async def test_answer_is_committed_before_it_is_returned_and_replayed_next_run(
    store: Store, tmp_path: Path
) -> None:
    backend = ScriptedBackend()
    first = await dispatcher(backend, store)("judge", MSGS)
    assert not first.cached
    # Another connection (another process after a kill) already sees it.
    with closing(sqlite3.connect(tmp_path / "run.coevol.db")) as db:
        assert db.execute("SELECT text FROM calls").fetchall() == [(first.text,)]

    again = dispatcher(backend, store)
    replay = await again("judge", MSGS)
    assert replay.cached and replay.text == first.text
    assert len(backend.calls) == 1
    assert again.stats.cached == 1 and again.stats.sent == 0
    assert again.stats.cached_usage["judge"].prompt_tokens == 10


async def test_attempt_and_route_are_part_of_the_key(store: Store) -> None:
    backend = ScriptedBackend()
    d = dispatcher(backend, store)
    a = await d("judge", MSGS)
    b = await d("judge", MSGS, attempt=1)  # a deliberate re-ask is a new call
    c = await d("editor", MSGS)  # same messages, another model
    assert len({a.text, b.text, c.text}) == 3
    assert len(backend.calls) == 3
    assert [call[0].model for call in backend.calls] == ["m1", "m1", "m2"]
    await d("judge", MSGS, attempt=1)
    assert len(backend.calls) == 3


async def test_failures_are_stored_as_failures_never_as_answers(store: Store) -> None:
    backend = ScriptedBackend(failing(1, lambda: BadRequestError("HTTP 400: nope", status=400)))
    d = dispatcher(backend, store)
    with pytest.raises(BadRequestError):
        await d("judge", MSGS)
    assert store.count_call_failures() == 1
    assert store.count_calls() == 0
    assert d.stats.failed_calls == 1 and d.stats.errors == {"BadRequestError": 1}
    answer = await d("judge", MSGS)  # the next run asks again rather than replaying the error
    assert answer.text == "fine" and not answer.cached
    assert len(backend.calls) == 2


# --- retries -----------------------------------------------------------------------------------------


async def test_transient_errors_are_retried_until_success(store: Store) -> None:
    backend = ScriptedBackend(failing(3, lambda: ServerError("HTTP 500", status=500)))
    d = dispatcher(backend, store)
    answer = await d("judge", MSGS)
    assert answer.text == "fine"
    assert len(backend.calls) == 4
    assert d.stats.retries == 3 and d.stats.sent == 1 and d.stats.failed_calls == 0
    assert store.count_call_failures() == 0


async def test_exhausted_retries_raise_and_store_the_failure(store: Store) -> None:
    backend = ScriptedBackend(failing(10, lambda: ServerError("HTTP 503", status=503)))
    d = dispatcher(backend, store, retry=RetryPolicy(max_retries=2, base_delay=0.001))
    with pytest.raises(ServerError):
        await d("judge", MSGS)
    assert len(backend.calls) == 3  # the first try and two retries
    assert store.count_call_failures() == 1 and store.count_calls() == 0


@pytest.mark.parametrize(
    "error",
    [
        lambda: AuthenticationError("HTTP 401", status=401),
        lambda: BadRequestError("HTTP 400", status=400),
    ],
    ids=["auth", "bad-request"],
)
async def test_fatal_errors_are_not_retried(store: Store, error: Callable[[], LLMError]) -> None:
    backend = ScriptedBackend(failing(5, error))
    d = dispatcher(backend, store)
    with pytest.raises(type(error())):
        await d("judge", MSGS)
    assert len(backend.calls) == 1
    assert d.stats.retries == 0


async def test_a_429_delays_only_its_own_request() -> None:
    backend = ScriptedBackend(failing(1, lambda: RateLimitError("HTTP 429", retry_after=0.15)))
    d = dispatcher(backend)
    rejected = asyncio.create_task(d("judge", MSGS))
    await asyncio.sleep(0.02)
    assert [w.reason for w in d.stats.waits.values()] == ["429"]  # visible while it waits
    other = await d("editor", MSGS)  # asked during the backoff: sent at once
    assert not rejected.done()
    assert (await rejected).text == other.text == "fine"
    times = [t for _, t in backend.calls]
    assert len(times) == 3
    assert times[1] < times[2]  # the other request went out before the retry, not after the pause
    assert times[2] - times[0] >= 0.15 - 0.005
    assert d.stats.rate_limited == 1 and d.stats.retries == 1
    assert d.stats.waits == {} and d.stats.pauses == {}


async def test_a_retry_after_beyond_the_cap_is_capped_and_shown_until_when() -> None:
    backend = ScriptedBackend(failing(1, lambda: RateLimitError("HTTP 429", retry_after=3600.0)))
    d = dispatcher(backend, retry=RetryPolicy(max_retries=2, max_retry_after=0.1))
    task = asyncio.create_task(d("judge", MSGS))
    await asyncio.sleep(0.03)
    (wait,) = d.stats.waits.values()
    assert (wait.roles, wait.reason, wait.server_wide) == ("judge", "429", False)
    assert wait.until < time.time() + 0.1  # the cap, not the hour the server asked for
    assert (await task).text == "fine"


async def test_a_server_answering_mostly_429_pauses_every_request_to_it() -> None:
    def script(request: ChatRequest, n: int) -> Completion | LLMError:
        return RateLimitError("429", retry_after=0.2) if n < 12 else Completion("ok")

    backend = ScriptedBackend(script, delay=0.005)
    d = dispatcher(backend, max_in_flight=16)
    burst = [asyncio.create_task(d("judge", [{"role": "user", "content": str(i)}])) for i in range(12)]
    for _ in range(200):  # until all twelve were answered 429
        if d.stats.rate_limited == 12:
            break
        await asyncio.sleep(0.005)
    (pause,) = d.stats.pauses.values()
    assert pause.server_wide and pause.reason == "429" and pause.roles == "judge, editor"
    await d("editor", [{"role": "user", "content": "asked during the pause"}])
    await asyncio.gather(*burst)
    first_429 = backend.calls[0][1]
    fresh = next(t for r, t in backend.calls if r.messages[0]["content"] == "asked during the pause")
    assert fresh - first_429 >= 0.2 - 0.01  # it waited for the server-wide pause


def test_retry_policy_obeys_retry_after_and_jitters_otherwise() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=30.0)
    assert policy.delay(0, RateLimitError("429", retry_after=7.0)) == 7.0
    assert policy.delay(5, RateLimitError("429", retry_after=100.0)) == 30.0
    delays = [policy.delay(3, ServerError("500")) for _ in range(200)]
    assert all(0 <= x <= 4.0 for x in delays)
    assert len(set(delays)) > 100  # jittered, not a fixed schedule
    assert max(policy.delay(0, ServerError("500")) for _ in range(200)) <= 0.5
    assert max(policy.delay(10, RateLimitError("429")) for _ in range(200)) <= 4.0  # no Retry-After


# --- concurrency ---------------------------------------------------------------------------------


async def test_in_flight_limit_is_respected() -> None:
    backend = ScriptedBackend(delay=0.01)
    d = dispatcher(backend, max_in_flight=5)
    await asyncio.gather(*(d("judge", [{"role": "user", "content": str(i)}]) for i in range(40)))
    assert backend.peak == 5
    assert server_limit(d).in_flight == 0


async def test_identical_requests_in_flight_are_sent_once(store: Store) -> None:
    backend = ScriptedBackend(delay=0.02)
    d = dispatcher(backend, store)
    answers = await asyncio.gather(*(d("judge", MSGS) for _ in range(5)))
    assert len(backend.calls) == 1
    assert {a.text for a in answers} == {"answer 0"}
    assert d.stats.sent == 1 and d.stats.cached == 4


async def test_a_cancelled_sender_does_not_strand_the_others() -> None:
    backend = ScriptedBackend(delay=0.05)
    d = dispatcher(backend)
    leader = asyncio.create_task(d("judge", MSGS))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(d("judge", MSGS))
    await asyncio.sleep(0.01)
    leader.cancel()
    answer = await follower
    assert answer.text == "answer 1"  # it sent the request itself
    assert leader.cancelled()


async def test_rate_limits_shrink_the_limit_once_per_burst_and_it_recovers() -> None:
    def script(request: ChatRequest, n: int) -> Completion | LLMError:
        return RateLimitError("429", retry_after=0.01) if n < 8 else Completion("ok")

    backend = ScriptedBackend(script, delay=0.005)
    d = dispatcher(backend, max_in_flight=8)
    await asyncio.gather(*(d("judge", [{"role": "user", "content": str(i)}]) for i in range(8)))
    # Eight simultaneous 429s are one overload signal: halved once, not eight times.
    assert server_limit(d).backoffs == 1
    assert server_limit(d).limit < 8
    await asyncio.gather(*(d("judge", [{"role": "user", "content": f"more {i}"}]) for i in range(200)))
    assert server_limit(d).limit == 8


def test_adaptive_limit_halves_and_grows_back() -> None:
    limit = AdaptiveLimit(64)
    epoch = limit.epoch
    assert limit.backoff(since=epoch)
    assert not limit.backoff(since=epoch)  # a 429 from before the backoff: ignored
    assert limit.limit == 32
    assert limit.backoff()
    assert limit.limit == 16
    for _ in range(6):
        limit.backoff()
    assert limit.limit == 1  # never below the minimum
    for _ in range(10_000):
        limit.in_flight += 1
        limit.release(success=True)
    assert limit.limit == 64
    with pytest.raises(ValueError):
        AdaptiveLimit(0)


async def test_waiting_requests_get_slots_fifo_and_a_cancelled_one_passes_its_slot_on() -> None:
    group = EndpointGroup([ScriptedBackend()], limits=[1], backpressure=None)
    first = await group.acquire(set())
    assert first is not None
    order: list[str] = []

    async def take(name: str) -> None:
        server = await group.acquire(set())
        assert server is not None
        order.append(name)
        group.released(server)

    a = asyncio.create_task(take("a"))
    b = asyncio.create_task(take("b"))
    c = asyncio.create_task(take("c"))
    await asyncio.sleep(0)
    b.cancel()
    group.released(first)
    await asyncio.gather(a, c, return_exceptions=True)
    assert order == ["a", "c"]
    assert first.limit.in_flight == 0


async def test_token_bucket_bursts_then_paces() -> None:
    bucket = TokenBucket(per_minute=600)  # 10 a second, a burst of 600
    loop = asyncio.get_running_loop()
    await bucket.take(600)
    assert bucket.tokens < 1  # the burst is spent ...
    start = loop.time()
    await bucket.take(2)
    assert loop.time() - start >= 0.1 - 0.005  # ... so two more wait for the refill
    bucket.give_back(5)
    assert bucket.tokens >= 5  # an over-estimate given back is there to spend


async def test_rpm_limit_paces_requests() -> None:
    backend = ScriptedBackend()
    d = dispatcher(backend, rpm=1200)  # 20 a second after a burst of 1200
    d._rpm.tokens = 2  # type: ignore[union-attr]  # start with a burst of two
    d._rpm._stamp = time.monotonic()  # type: ignore[union-attr]  # from now: no refill for the time spent so far
    await asyncio.gather(*(d("judge", [{"role": "user", "content": str(i)}]) for i in range(4)))
    times = [t for _, t in backend.calls]
    assert times[-1] - times[0] >= 2 / 20 - 0.01


async def test_tpm_limit_accounts_estimated_tokens() -> None:
    backend = ScriptedBackend()
    d = dispatcher(backend, tpm=6000)
    await d("judge", MSGS)
    bucket = d._tpm
    assert bucket is not None
    # The estimate (prompt chars/4 + max_tokens) is taken, then the unused part given back.
    assert 6000 - bucket.tokens == pytest.approx(15, abs=1)


async def test_after_a_refused_key_nothing_more_is_sent() -> None:
    backend = ScriptedBackend(
        failing(1, lambda: AuthenticationError("HTTP 401: invalid API key", status=401))
    )
    d = dispatcher(backend)
    with pytest.raises(AuthenticationError):
        await d("judge", MSGS)
    with pytest.raises(AuthenticationError, match="already refused"):
        await d("editor", [{"role": "user", "content": "another request, same server"}])
    assert len(backend.calls) == 1
