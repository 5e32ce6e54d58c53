"""The scheduler against servers that queue: latency backpressure, reported capacity, stalled servers."""

from __future__ import annotations

import asyncio

import pytest

from coevol.engine import capacity
from coevol.engine.capacity import learn_capacity, slot_count, total_slots, vllm_queue
from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.engine.endpoints import EndpointGroup, HealthPolicy
from coevol.engine.limits import Backpressure
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import Completion, GenParams
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, ScriptedBackend, always


def ask(d: Dispatcher, text: str) -> asyncio.Future[Completion]:
    return asyncio.ensure_future(d("judge", [{"role": "user", "content": text}]))


def through(group: EndpointGroup, **kwargs: object) -> Dispatcher:
    retry = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.01)
    return Dispatcher({"judge": Route(group, "fake-model", GenParams(max_tokens=8))}, retry=retry, **kwargs)  # type: ignore[arg-type]


# --- what servers say about their capacity (pure) ----------------------------------------------------


def test_total_slots_is_read_from_llama_cpp_props_and_odd_claims_are_ignored() -> None:
    assert total_slots(b'{"total_slots": 4, "model_path": "m.gguf"}') == 4
    for raw in (
        b'{"total_slots": 0}',
        b'{"total_slots": -3}',
        b'{"total_slots": true}',
        b'{"total_slots": "4"}',
        b'{"total_slots": 4.0}',
        b'{"total_slots": 100000000}',
        b'{"slots": 4}',
        b"[4]",
        b"<html>404</html>",
        b"",
    ):
        assert total_slots(raw) is None, raw


def test_slot_count_is_read_from_llama_cpp_slots() -> None:
    assert slot_count(b'[{"id": 0}, {"id": 1}, {"id": 2}]') == 3
    assert slot_count(b"[]") is None
    assert slot_count(b"[1, 2]") is None
    assert slot_count(b'{"id": 0}') is None
    assert slot_count(b"not json") is None


# --- capacity, learned over loopback -----------------------------------------------------------------


async def test_a_server_that_reports_one_slot_never_gets_a_queue() -> None:
    async with FakeOpenAIServer(slots=1, latency=0.01, reports="llama.cpp") as server:
        group = EndpointGroup([OpenAIHTTPBackend(server.base_url)], limits=[64])
        assert await learn_capacity(group) == {server.base_url: 1}
        d = through(group)
        answers = await asyncio.gather(*(ask(d, str(i)) for i in range(12)))
        await group.aclose()
        stats = server.stats()
    assert len(answers) == 12
    # Capped at its slot and one ready to go: at most one request ever waits in its queue.
    assert stats["max_in_flight"] <= 2 and stats["max_queued"] <= 1
    assert group.servers[0].limit.maximum == 2


async def test_a_server_that_does_not_report_keeps_its_limit() -> None:
    async with FakeOpenAIServer(slots=1) as server:
        group = EndpointGroup([OpenAIHTTPBackend(server.base_url)], limits=[64])
        assert await learn_capacity(group) == {}
        await group.aclose()
    assert group.servers[0].limit.maximum == 64


async def test_the_fake_reports_running_and_waiting_as_vllm_does() -> None:
    async with FakeOpenAIServer(slots=1, latency=0.2, reports="vllm") as server:
        backend = OpenAIHTTPBackend(server.base_url)
        d = through(EndpointGroup([backend], limits=[4], backpressure=None))
        calls = [ask(d, str(i)) for i in range(3)]
        await asyncio.sleep(0.1)
        text = (await backend.fetch_root("/metrics")).decode()
        await asyncio.gather(*calls)
        await backend.aclose()
    assert 'vllm:num_requests_running{model_name="fake-model"} 1.0' in text
    assert 'vllm:num_requests_waiting{model_name="fake-model"} 2.0' in text


# --- latency backpressure ----------------------------------------------------------------------------


async def queue_depth(backpressure: Backpressure | None) -> tuple[int, float]:
    """The deepest queue a 2-slot server saw from 30 chains of calls, and the client's final limit."""
    async with FakeOpenAIServer(slots=2, latency=0.05) as server:
        group = EndpointGroup([OpenAIHTTPBackend(server.base_url)], limits=[64], backpressure=backpressure)
        d = through(group)

        async def chain(c: int) -> None:
            for i in range(2):
                await d("judge", [{"role": "user", "content": f"{c}/{i}"}])

        await asyncio.gather(*(chain(c) for c in range(30)))
        await group.aclose()
        return server.stats()["max_queued"], group.servers[0].limit.limit


async def test_latency_backpressure_keeps_a_queueing_server_full_without_a_long_queue() -> None:
    unbounded, limit = await queue_depth(None)
    assert unbounded >= 20 and limit == 64  # without it, everything allowed is sent and queues there
    bounded, limit = await queue_depth(Backpressure(min_delay=0.0))
    assert bounded < unbounded
    assert limit < 16  # the queueing delay shrank the limit below its first window


def test_backpressure_halves_at_most_per_round_trip_and_grows_when_latency_is_flat() -> None:
    from coevol.engine.limits import AdaptiveLimit

    limit = AdaptiveLimit(64, backpressure=Backpressure(smoothing=1.0, min_delay=0.0))
    assert limit.limit == 16  # slow start
    for _ in range(16):
        limit.take()
    for _ in range(4):
        limit.release(latency=1.0)  # unqueued: the window doubles
    assert limit.limit == 20 and limit.slow_start
    limit.release(latency=10.0)  # ten times the baseline: queueing
    assert limit.limit == 10 and not limit.slow_start  # halved at most
    for _ in range(5):
        limit.release(latency=10.0)  # answers sent under the old limit: no second cut yet
    assert limit.limit == 10
    limit.release(latency=1.0)  # flat again: it grows back by about sqrt(limit) per round trip
    assert limit.limit == pytest.approx(10 + 10**0.5 / 10)
    limit.backoff()  # a 429: halved, and from then on one more per round trip (AIMD)
    limit.release(latency=1.0)
    assert limit.limit == pytest.approx((10 + 10**0.5 / 10) / 2 + 1 / ((10 + 10**0.5 / 10) / 2))


# --- an uncapped backend -----------------------------------------------------------------------------


class Queued(ScriptedBackend):
    """A backend that queues on its own side (a batch API): no in-flight cap applies."""

    in_flight_cap = False


async def test_a_backend_that_queues_on_its_side_is_not_capped() -> None:
    backend = Queued(delay=0.01)
    d = Dispatcher({"judge": Route(backend, "m")}, max_in_flight=2)
    await asyncio.gather(*(ask(d, str(i)) for i in range(10)))
    assert backend.peak == 10


# --- a stalled server --------------------------------------------------------------------------------


STALL = HealthPolicy(stall_after=0.3, stall_factor=10.0, base_backoff=60.0)


async def test_a_server_that_accepts_and_never_answers_leaves_rotation_and_its_requests_move() -> None:
    hang = always(Fault(FaultKind.HANG, hang_seconds=30.0))
    async with FakeOpenAIServer(latency=0.01) as good, FakeOpenAIServer(faults=hang) as stalled:
        backends = [OpenAIHTTPBackend(stalled.base_url), OpenAIHTTPBackend(good.base_url)]
        group = EndpointGroup(backends, limits=[8, 8], health=STALL)
        group.servers[1].sent = 100  # the stalled server looks least used: it is chosen first
        d = through(group)

        async def chain(c: int) -> None:
            for i in range(5):
                await d("judge", [{"role": "user", "content": f"{c}/{i}"}])

        await asyncio.wait_for(asyncio.gather(*(chain(c) for c in range(6))), 20)
        states = [s.state for s in group.states()]
        await group.aclose()
        stuck = len(stalled.requests)
    assert states == ["down", "up"]  # the stalled server, the good one
    assert len(good.requests) == 30  # every call answered by the good server
    assert 0 < stuck <= 8  # the stalled one got at most its limit, never a re-send
    assert d.stats.failed_calls == 0 and d.stats.errors == {}


async def test_a_cancelled_run_is_not_mistaken_for_a_stalled_server() -> None:
    backend = ScriptedBackend(delay=5.0)
    d = Dispatcher({"judge": Route(backend, "m")})
    call = ask(d, "x")
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (server,) = d.groups["judge"].servers
    assert server.limit.in_flight == 0 and not server.attempts


def test_vllm_queue_is_read_from_its_metrics_and_odd_text_is_not() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a"} 3.0\n'
        'vllm:num_requests_running{model_name="b"} 1.0\n'
        'vllm:num_requests_waiting{model_name="a"} 5.0\n'
    )
    assert vllm_queue(text) == (4, 5)
    assert vllm_queue("vllm:num_requests_running 2\n") == (2, 0)
    assert vllm_queue("vllm:num_requests_waiting 2\n") is None  # no running gauge: not vLLM's
    assert vllm_queue("vllm:num_requests_running{} NaN\n") is None
    assert vllm_queue("vllm:num_requests_running{} -1\n") is None
    assert vllm_queue("vllm:num_requests_running{} 1e12\n") is None
    assert vllm_queue("<html>404</html>") is None


async def test_requests_waiting_in_a_vllm_queue_shrink_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "_WATCH_EVERY", 0.05)
    async with FakeOpenAIServer(slots=2, latency=0.3, reports="vllm") as server:
        group = EndpointGroup([OpenAIHTTPBackend(server.base_url)], limits=[64], backpressure=None)
        assert await learn_capacity(group) == {}  # no slots to read: its queue is watched instead
        d = through(group)
        await asyncio.gather(*(ask(d, str(i)) for i in range(12)))
        await group.aclose()
    assert group.servers[0].limit.limit <= 4  # the ten that waited there were shed
