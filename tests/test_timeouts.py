"""Timeouts on progress, not on queue time: each phase against a real loopback peer that stalls there.

A server that never accepts (connect), accepts and never answers (first byte), starts an answer and
stops (idle: a stalled body, a chunked body that never ends) or drips bytes (the total cap) times
out in the phase it stalled in, and the error names that phase for the scheduler.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from coevol.cli.flags import overrides
from coevol.cli.main import _parser
from coevol.config import Config
from coevol.engine.build import build_engine
from coevol.errors import APIConnectionError, APITimeoutError, ConfigError
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.timeouts import Clock, Timeouts, timeout_message
from coevol.llm.types import ChatRequest, GenParams
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, always

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

SECRET = "sk-timeout-NEVER-LEAK-31c9"
MSGS = ({"role": "user", "content": "hi"},)


def request(backend: OpenAIHTTPBackend) -> ChatRequest:
    return ChatRequest(backend.endpoint, "fake-model", MSGS, GenParams(max_tokens=8))


async def timed_out(fault: Fault, **kwargs: Any) -> APITimeoutError:
    async with (
        FakeOpenAIServer(faults=always(fault)) as server,
        OpenAIHTTPBackend(server.base_url, api_key=SECRET, **kwargs) as backend,
    ):
        with pytest.raises(APITimeoutError) as info:
            await backend.complete(request(backend))
    assert SECRET not in str(info.value)
    return info.value


# --- pure: the limits, the deadlines, the words ---------------------------------------------------


def test_the_default_limits_are_long_for_the_queue_and_short_for_a_stall() -> None:
    t = Timeouts()
    assert (t.connect, t.first_byte, t.idle, t.total) == (10.0, 600.0, 30.0, 900.0)
    assert Timeouts(total=None).within(30.0) == Timeouts(10.0, 30.0, 30.0, 30.0)
    assert Timeouts(connect=5, idle=2).within(3.0) == Timeouts(3.0, 3.0, 2.0, 3.0)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_a_limit_that_is_not_a_positive_number_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="idle_timeout must be a positive number of seconds"):
        Timeouts(idle=bad)
    with pytest.raises(ConfigError, match="first_byte_timeout"):
        OpenAIHTTPBackend("http://127.0.0.1:9/v1", first_byte_timeout=bad)


def test_the_clock_names_the_phase_whose_deadline_comes_first() -> None:
    clock = Clock(Timeouts(connect=1, first_byte=10, idle=2, total=12), start=100.0)
    assert (clock.at("first_byte", 100.5), clock.phase) == (110.5, "first_byte")
    assert (clock.at("idle", 105.0), clock.phase) == (107.0, "idle")
    assert (clock.at("idle", 111.0), clock.phase) == (112.0, "total")  # the cap comes first
    uncapped = Clock(Timeouts(total=None), start=0.0)
    assert (uncapped.at("first_byte", 1.0), uncapped.phase, uncapped.seconds("total")) == (
        601.0,
        "first_byte",
        math.inf,
    )


def test_each_phase_says_what_timed_out_and_which_setting_to_change() -> None:
    where = "http://h:1/v1/chat/completions"
    assert timeout_message("connect", where, 10) == (
        "no connection to http://h:1/v1/chat/completions within connect_timeout=10s; request not sent"
    )
    assert timeout_message("first_byte", where, 600) == (
        "no answer from http://h:1/v1/chat/completions within first_byte_timeout=600s of sending the "
        "request (the server's queue and generation count here); request cancelled"
    )
    assert timeout_message("idle", where, 0.5) == (
        "the answer from http://h:1/v1/chat/completions stopped for idle_timeout=0.5s midway; "
        "request cancelled"
    )
    assert timeout_message("total", where, 900) == (
        "the exchange with http://h:1/v1/chat/completions ran past request_timeout=900s; request cancelled"
    )


def test_a_timeout_error_says_whether_the_server_stalled() -> None:
    assert [APITimeoutError("x", phase=p).stalled for p in ("connect", "first_byte", "idle", "total")] == [
        True,
        False,
        True,
        True,
    ]
    unknown = APITimeoutError("x")
    assert unknown.phase is None and unknown.stalled is None and unknown.retryable


# --- each phase against a loopback peer -------------------------------------------------------------


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose accept queue is full: a new connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_a_server_that_never_accepts_times_out_in_the_connect_phase(full_backlog: int) -> None:
    async with OpenAIHTTPBackend(
        f"http://127.0.0.1:{full_backlog}/v1", connect_timeout=0.3, api_key=SECRET
    ) as backend:
        with pytest.raises(APITimeoutError) as info:
            await backend.complete(request(backend))
    assert info.value.phase == "connect" and info.value.stalled
    assert "connect_timeout=0.3s" in str(info.value) and SECRET not in str(info.value)


async def test_a_server_that_accepts_and_never_answers_times_out_on_the_first_byte() -> None:
    exc = await timed_out(Fault(FaultKind.HANG, hang_seconds=5), first_byte_timeout=0.3)
    assert exc.phase == "first_byte" and not exc.stalled
    assert "first_byte_timeout=0.3s" in str(exc)


async def test_headers_then_a_silent_body_times_out_idle_long_before_the_first_byte_limit() -> None:
    exc = await timed_out(Fault(FaultKind.STALL, hang_seconds=5), idle_timeout=0.3)
    assert exc.phase == "idle" and exc.stalled
    assert "idle_timeout=0.3s" in str(exc)


async def test_a_chunked_body_that_never_ends_times_out_idle() -> None:
    exc = await timed_out(Fault(FaultKind.ENDLESS, hang_seconds=5), idle_timeout=0.3)
    assert exc.phase == "idle"


async def test_a_server_that_drips_is_never_idle_and_is_stopped_by_the_total_cap() -> None:
    exc = await timed_out(Fault(FaultKind.DRIP, interval=0.02), idle_timeout=0.3, request_timeout=0.6)
    assert exc.phase == "total" and exc.stalled
    assert "request_timeout=0.6s" in str(exc)


async def test_a_drip_that_ends_in_time_is_an_answer() -> None:
    async with (
        FakeOpenAIServer(faults=always(Fault(FaultKind.DRIP, interval=0.001))) as server,
        OpenAIHTTPBackend(server.base_url, idle_timeout=1.0) as backend,
    ):
        assert (await backend.complete(request(backend))).text == "ok"


async def test_an_endless_body_whose_connection_closes_is_a_connection_error() -> None:
    async with (
        FakeOpenAIServer(faults=always(Fault(FaultKind.ENDLESS, hang_seconds=0.1))) as server,
        OpenAIHTTPBackend(server.base_url, idle_timeout=5) as backend,
    ):
        with pytest.raises(APIConnectionError):
            await backend.complete(request(backend))


async def test_a_timed_out_request_is_cancelled_at_the_server() -> None:
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.HANG, hang_seconds=5))) as server:
        async with OpenAIHTTPBackend(server.base_url, first_byte_timeout=0.2) as backend:
            with pytest.raises(APITimeoutError):
                await backend.complete(request(backend))
        for _ in range(100):
            if server.stats()["in_flight"] == 0:
                break
            await asyncio.sleep(0.01)
        assert server.stats()["in_flight"] == 0
        assert server.requests[0].end is None


# --- configuration ------------------------------------------------------------------------------------


def test_the_flags_set_the_config_keys() -> None:
    ns = _parser().parse_args(
        [
            "refine",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--connect-timeout",
            "2",
            "--first-byte-timeout",
            "120",
            "--idle-timeout",
            "5",
            "--request-timeout",
            "300",
        ]
    )
    config = Config.from_mapping(overrides(ns))
    assert (
        config.connect_timeout,
        config.first_byte_timeout,
        config.idle_timeout,
        config.request_timeout,
    ) == (
        2.0,
        120.0,
        5.0,
        300.0,
    )
    with pytest.raises(ConfigError):
        Config.from_mapping({"idle_timeout": 0})


async def test_the_config_timeouts_reach_the_http_client() -> None:
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.STALL, hang_seconds=5))) as server:
        engine = await build_engine(
            Config(base_url=server.base_url, model="fake-model", idle_timeout=0.3, max_retries=0)
        )
        try:
            with pytest.raises(APITimeoutError) as info:
                await engine.dispatcher("judge", list(MSGS))
        finally:
            await engine.aclose()
    assert info.value.phase == "idle"
