"""Several servers for one role: the group's choice, failover, probes, key scoping, cache identity."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coevol.api import arefine_file
from coevol.config import Config, load_config
from coevol.engine.build import build_engine
from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.engine.endpoints import EndpointGroup, EndpointState, HealthPolicy, describe_pool
from coevol.engine.runner import role_routes
from coevol.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServerError,
)
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest, Completion
from coevol.store.sqlite import Store
from coevol.testing.responders import CoEvolResponder

from .engine_support import ThreadedServer, alpaca_rows, refine_file, run_cli, write_jsonl

MSGS = ({"role": "user", "content": "hello"},)


class Fake:
    """An in-process server: answers after ``delay``, or raises what ``fail`` says; counts calls."""

    def __init__(self, name: str, *, delay: float = 0.0, models: tuple[str, ...] = ("m",)) -> None:
        self.endpoint = name
        self.delay = delay
        self.fail: type[Exception] | None = None
        self.calls = 0
        self.probes = 0
        self.models = list(models)
        self.in_flight = 0
        self.peak = 0

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail(f"{self.endpoint} failed")
            return Completion(f"{self.endpoint}:{request.messages[-1]['content']}", 1, 1, "stop")
        finally:
            self.in_flight -= 1

    async def list_models(self, *, within: float | None = None) -> list[str]:
        self.probes += 1
        if self.fail is not None:
            raise APIConnectionError("down")
        return self.models

    async def aclose(self) -> None:
        pass


class Asker:
    """Requests for one role through a dispatcher over ``group``, the way a run sends them."""

    def __init__(self, group: EndpointGroup, *, max_retries: int = 6) -> None:
        self.dispatcher = Dispatcher(
            {"judge": Route(group, "m")},
            retry=RetryPolicy(max_retries=max_retries, base_delay=0.001, max_delay=0.01),
        )

    async def __call__(self, text: str = "hello") -> Completion:
        return await self.dispatcher("judge", [{"role": "user", "content": text}])


FAST = HealthPolicy(failures=2, base_backoff=0.02, max_backoff=0.05, probe_timeout=1.0)


async def test_requests_spread_by_load_relative_to_each_limit() -> None:
    a, b = Fake("a", delay=0.02), Fake("b", delay=0.02)
    pool = EndpointGroup([a, b], limits=[6, 2], health=FAST)
    ask = Asker(pool)
    await asyncio.gather(*(ask(str(i)) for i in range(32)))
    assert a.calls + b.calls == 32
    assert a.peak == 6 and b.peak == 2  # each server's own limit, both full
    assert a.calls > b.calls > 0


@pytest.mark.parametrize("error", [APIConnectionError, APITimeoutError])
async def test_a_failing_server_leaves_rotation_its_requests_go_elsewhere_and_a_probe_brings_it_back(
    error: type[Exception],
) -> None:
    a, b = Fake("a", delay=0.005), Fake("b", delay=0.005)
    pool = EndpointGroup([a, b], limits=[4, 4], health=FAST)
    ask = Asker(pool)
    b.fail = error
    answers = await asyncio.gather(*(ask(str(i)) for i in range(20)))
    assert all(c.text.startswith("a:") for c in answers)  # every request answered, by a
    state = {s.name: s.state for s in pool.states()}
    assert state["b"] in ("down", "probing")
    b.fail = None
    await asyncio.sleep(0.1)  # past the backoff: the next choice starts a probe
    await ask("x")
    await asyncio.sleep(0.01)
    assert b.probes >= 1
    before = b.calls
    await asyncio.gather(*(ask(str(i)) for i in range(20)))
    assert b.calls > before
    assert {s.name: s.state for s in pool.states()} == {"a": "up", "b": "up"}


async def test_repeated_5xx_takes_a_server_out_but_one_5xx_does_not() -> None:
    a, b = Fake("a"), Fake("b")
    pool = EndpointGroup([a, b], health=HealthPolicy(failures=3, base_backoff=30))
    ask = Asker(pool)
    b.fail = ServerError
    pool.servers[1].sent = -100  # b looks least used: it is chosen first whenever it is up
    await ask()
    assert pool.states()[1].state == "up" and b.calls == 1
    await ask()
    await ask()
    assert pool.states()[1].state == "down" and b.calls == 3 and a.calls == 3
    await ask()
    assert b.calls == 3  # out of rotation


async def test_when_every_server_is_down_the_caller_gets_a_retryable_error() -> None:
    a, b = Fake("a"), Fake("b")
    a.fail = b.fail = APIConnectionError
    pool = EndpointGroup([a, b], health=HealthPolicy(base_backoff=60, probe_timeout=1))
    ask = Asker(pool, max_retries=0)
    with pytest.raises(APIConnectionError, match=r"(a|b) failed"):
        await ask()
    assert (a.calls, b.calls) == (1, 1)  # failed over once, then out of tries
    # The last server in rotation stays in it (there is nowhere else to send): the next request
    # tries it again, and its caller gets the retryable error.
    with pytest.raises(APIConnectionError, match=r"(a|b) failed"):
        await ask("again")
    assert a.calls + b.calls == 3
    assert sorted(s.state for s in pool.states()) == ["down", "up"]


class Limited(Fake):
    """Answers 429 with a Retry-After to every request."""

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        raise RateLimitError("slow down", retry_after=30.0)


async def test_a_server_answering_429_backs_off_and_pauses_alone() -> None:
    a, b = Limited("a"), Fake("b")
    pool = EndpointGroup([a, b], limits=[8, 8], health=FAST)
    ask = Asker(pool)
    pool.servers[1].sent = 1000  # a looks least used: it is tried first while it may be
    answers = await asyncio.gather(*(ask(str(i)) for i in range(40)))
    assert all(c.text.startswith("b:") for c in answers)  # each 429 retried at once on b
    member = pool.servers[0]
    assert member.limit.limit < 8  # its own limit shrank, b's did not
    assert pool.servers[1].limit.limit == 8
    assert member.paused_until > 0  # 429s dominate its window and it said how long: it pauses
    calls = a.calls
    await asyncio.gather(*(ask(f"x{i}") for i in range(10)))
    assert a.calls == calls  # paused: nothing more is sent to it
    (pause,) = ask.dispatcher.stats.pauses.values()  # the display names the paused server
    assert (pause.roles, pause.reason, pause.server_wide) == ("judge", "429", True)


async def test_a_refused_key_is_not_failover_material() -> None:
    a = Fake("a")
    a.fail = AuthenticationError
    pool = EndpointGroup([a, Fake("b")])
    pool.servers[1].sent = 10  # a first
    with pytest.raises(AuthenticationError):
        await Asker(pool)()


async def test_servers_that_serve_different_models_are_never_mixed() -> None:
    pool = EndpointGroup([Fake("a", models=("m1",)), Fake("b", models=("m2",))])
    with pytest.raises(ConfigError, match="serve different models"):
        await pool.list_models()
    same = EndpointGroup([Fake("a", models=("m1",)), Fake("b", models=("m1",))])
    assert await same.list_models() == ["m1"]


async def test_the_run_goes_on_through_the_dispatcher_while_one_server_works(tmp_path: Path) -> None:
    a, b = Fake("a", delay=0.001), Fake("b", delay=0.001)
    pool = EndpointGroup([a, b], health=FAST)
    store = Store(tmp_path / "s.db")
    d = Dispatcher({"judge": Route(pool, "m")}, store=store, retry=RetryPolicy(base_delay=0.001))
    first = await asyncio.gather(*(d("judge", [{"role": "user", "content": str(i)}]) for i in range(10)))
    a.fail = APIConnectionError
    second = await asyncio.gather(*(d("judge", [{"role": "user", "content": f"x{i}"}]) for i in range(10)))
    assert len(first) == len(second) == 10 and all(c.text.startswith("b:") for c in second)
    # A rerun through other servers of the group replays from the store: nothing is sent.
    c = Fake("c")
    again = Dispatcher({"judge": Route(EndpointGroup([c], name="pool"), "m")}, store=store)
    await asyncio.gather(*(again("judge", [{"role": "user", "content": str(i)}]) for i in range(10)))
    assert c.calls == 0 and again.stats.cached == 10
    store.close()


def test_describe_pool_exact() -> None:
    states = [
        EndpointState("http://a:1/v1", "up", 12, 64, 340, 0),
        EndpointState("http://b:2/v1", "down", 0, 32, 10, 3, retry_in=4.2),
        EndpointState("http://c:3/v1", "probing", 0, 64, 0, 1),
    ]
    assert describe_pool(states) == (
        "endpoints: http://a:1/v1 up 12/64 (340 sent), http://b:2/v1 down (probe in 4s, 3 failed), "
        "http://c:3/v1 probing 0/64 (0 sent)"
    )
    hostile = [EndpointState("http://x/\x1b[31m", "up", 0, 1, 0, 0)]
    assert "\x1b" not in describe_pool(hostile)


# --- configuration ----------------------------------------------------------------------------


def test_base_url_list_becomes_endpoints_and_masks_secrets() -> None:
    c = Config.from_mapping(
        {"base_url": ["http://a/v1", {"base_url": "http://b/v1?api-key=SECRET123", "api_key_env": "KEY_B"}]}
    )
    assert c.base_url == "http://a/v1"
    endpoints, group = c.role_endpoints("judge")
    assert [(e.base_url, e.api_key_env) for e in endpoints] == [
        ("http://a/v1", "OPENAI_API_KEY"),
        ("http://b/v1?api-key=SECRET123", "KEY_B"),
    ]
    assert group == "pool"
    text = c.to_yaml()
    assert "SECRET123" not in text and "http://b/v1?api-key=***" in text
    assert Config.from_yaml(text).role_endpoints("judge")[1] == "pool"


def test_one_server_in_a_list_is_a_plain_base_url_with_its_old_cache_identity() -> None:
    c = Config.from_mapping({"base_url": ["http://a/v1"]})
    assert c.base_url == "http://a/v1" and c.endpoints == []
    assert c.role_endpoints("judge")[1] is None
    named = Config.from_mapping({"base_url": ["http://a/v1"], "endpoint_group": "qwen"})
    assert named.role_endpoints("judge")[1] == "qwen"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"base_url": ["http://a/v1", "http://a/v1"]}, "listed twice"),
        ({"endpoints": [{"base_url": "http://a/v1"}, {"base_url": "http://b/v1"}], "base_url": "http://c/v1"}, "one of the endpoints"),
        ({"base_url": ["http://u:p@a/v1", "http://b/v1"]}, "must not carry a user name"),
        ({"base_url": ["http://a/v1", {"base_url": "http://b/v1", "api_key_env": "sk-abc-123"}]}, "NAME of an environment"),
        ({"base_url": ["http://a/v1", {"base_url": "http://b/v1", "surprise": 1}]}, "unknown key"),
    ],
)  # fmt: skip
def test_hostile_endpoint_lists_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Config.from_mapping(data)
    assert "sk-abc-123" not in str(info.value) and "u:p" not in str(info.value)


def test_a_roles_own_servers_never_get_the_top_level_key() -> None:
    c = Config.from_mapping(
        {
            "base_url": ["http://a/v1", "http://b/v1"],
            "api_key_env": "TOP",
            "roles": {"judge": {"base_url": ["http://j1/v1", "http://j2/v1"]}},
        }
    )
    judge, group = c.role_endpoints("judge")
    assert [e.api_key_env for e in judge] == [None, None] and group == "pool"
    assert [e.api_key_env for e in c.role_endpoints("editor")[0]] == ["TOP", "TOP"]


def test_cli_repeatable_base_url(tmp_path: Path) -> None:
    done = run_cli("config", "--base-url", "http://a:1/v1", "--base-url", "http://b:2/v1?token=SECRETSECRET")
    assert done.returncode == 0, done.stderr
    assert "- base_url: http://a:1/v1" in done.stdout
    assert "- base_url: http://b:2/v1?token=***" in done.stdout and "SECRETSECRET" not in done.stdout


# --- over loopback ----------------------------------------------------------------------------


async def test_keys_go_only_to_the_servers_they_were_configured_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_A", "key-for-a")
    monkeypatch.setenv("KEY_B", "key-for-b")
    with ThreadedServer() as a, ThreadedServer() as b, ThreadedServer() as j:
        config = load_config(
            None,
            {
                "model": "fake",
                "base_url": [a.base_url, {"base_url": b.base_url, "api_key_env": "KEY_B"}],
                "api_key_env": "KEY_A",
                "roles": {"judge": {"base_url": j.base_url}},
            },
        )
        engine = await build_engine(config)
        try:
            for i in range(8):
                await engine.dispatcher("editor", [{"role": "user", "content": f"e{i}"}])
            await engine.dispatcher("judge", [{"role": "user", "content": "j"}])
        finally:
            await engine.aclose()
        assert {r.authorization for r in a.requests} == {"Bearer key-for-a"}
        assert {r.authorization for r in b.requests} == {"Bearer key-for-b"}
        assert {r.authorization for r in j.requests} == {None}


async def test_two_servers_one_stopped_mid_run_gives_the_one_server_output(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(30))
    with ThreadedServer(responder=CoEvolResponder(), latency=0.003) as ref:
        await refine_file(ref.base_url, data, tmp_path / "one" / "out.jsonl", concurrency=8)
    expected = (tmp_path / "one" / "out.jsonl").read_bytes()

    a = ThreadedServer(responder=CoEvolResponder(), latency=0.003).__enter__()
    b = ThreadedServer(responder=CoEvolResponder(), latency=0.003).__enter__()
    b_before_stop = 0
    urls = [a.base_url, b.base_url]
    try:

        async def stop_b() -> None:
            nonlocal b_before_stop
            await asyncio.to_thread(b.wait_for, lambda: b.count() >= 40)
            b_before_stop = b.count()
            await asyncio.to_thread(b.__exit__, None, None, None)

        stopper = asyncio.create_task(stop_b())
        (tmp_path / "two").mkdir()
        config = load_config(None, {"base_url": urls, "model": "fake", "concurrency": 8})
        run = await arefine_file(data, tmp_path / "two" / "out.jsonl", config)
        summary, stats = run.summary, run.stats
        await stopper
        a_total = a.count()
    finally:
        a.__exit__(None, None, None)
    assert (tmp_path / "two" / "out.jsonl").read_bytes() == expected
    assert summary.failed == 0 and summary.rows == 30
    assert b_before_stop >= 40 and a_total > 0
    pool = stats.pools[0]
    assert {s.name: s.sent > 0 for s in pool.states()} == dict.fromkeys(urls, True)
    assert {s.name: s.state for s in pool.states()}[urls[1]] != "up"  # out of rotation at the end


# --- the group's identity: cache keys, 0.2 stores, the model, the trace ---------------------------


async def test_one_server_under_another_host_name_replays_everything(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(6))
    cache = tmp_path / "shared.coevol.db"
    with ThreadedServer(responder=CoEvolResponder()) as server:
        port = server.base_url.split(":")[2].split("/")[0]
        first, stats = await refine_file(
            f"http://127.0.0.1:{port}/v1", data, tmp_path / "a" / "out.jsonl", cache=str(cache)
        )
        sent = server.count()
        again, replay = await refine_file(
            f"http://localhost:{port}/v1", data, tmp_path / "b" / "out.jsonl", cache=str(cache)
        )
        assert server.count() == sent  # the same group (pool:pool): nothing sent again
    assert first.complete and again.complete
    assert stats.sent == sent > 0 and replay.sent == 0 and replay.cached == stats.sent
    assert (tmp_path / "a" / "out.jsonl").read_bytes() == (tmp_path / "b" / "out.jsonl").read_bytes()


async def test_a_store_written_by_0_2_still_replays_a_single_servers_calls(tmp_path: Path) -> None:
    store = Store(tmp_path / "old.coevol.db")
    asked = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    with ThreadedServer() as server:
        # coevol 0.2 keyed one server's calls by its URL: a group of one without a name does too.
        old = OpenAIHTTPBackend(server.base_url)
        d = Dispatcher({"judge": Route(old, "fake")}, store=store)
        assert d.request("judge", asked[0]).endpoint == server.base_url
        before = [await d("judge", m) for m in asked]
        await old.aclose()
        sent = server.count()
        engine = await build_engine(
            load_config(None, {"base_url": server.base_url, "model": "fake"}), store=store
        )
        try:
            assert engine.dispatcher.request("judge", asked[0]).endpoint == "pool:pool"
            after = [await engine.dispatcher("judge", m) for m in asked]
        finally:
            await engine.aclose()
        assert server.count() == sent  # found under the old key, not sent again
    store.close()
    assert [c.text for c in after] == [c.text for c in before] and all(c.cached for c in after)


async def test_a_server_that_does_not_serve_the_model_is_refused_before_any_work() -> None:
    with ThreadedServer(model="m") as good, ThreadedServer(model="other") as other:
        config = load_config(None, {"base_url": [good.base_url, other.base_url], "model": "m"})
        with pytest.raises(
            ConfigError, match="not every server of endpoint group 'pool' serves model 'm'"
        ) as info:
            await build_engine(config)
        assert other.base_url in str(info.value) and good.base_url not in str(info.value)
        assert good.count() == other.count() == 0


async def test_servers_that_list_no_such_model_at_all_are_not_refused() -> None:
    # llama.cpp's server answers to any model name; only a server that lists it while another does
    # not is a stranger.
    with ThreadedServer(model="a.gguf") as a, ThreadedServer(model="a.gguf") as b:
        config = load_config(None, {"base_url": [a.base_url, b.base_url], "model": "qwen"})
        engine = await build_engine(config)
        await engine.aclose()


async def test_the_trace_names_the_servers_and_the_group_the_user_chose() -> None:
    with ThreadedServer() as a, ThreadedServer() as b:
        named = load_config(
            None, {"base_url": [a.base_url, b.base_url], "endpoint_group": "qwen-7b", "model": "fake"}
        )
        engine = await build_engine(named)
        await engine.aclose()
        assert role_routes(engine.dispatcher)["judge"].endpoint == f"qwen-7b: {a.base_url}, {b.base_url}"
        assert engine.dispatcher.request("judge", MSGS).endpoint == "pool:qwen-7b"
        unnamed = load_config(None, {"base_url": [a.base_url, b.base_url], "model": "fake"})
        engine = await build_engine(unnamed)
        await engine.aclose()
        assert role_routes(engine.dispatcher)["judge"].endpoint == f"{a.base_url}, {b.base_url}"


class Busy(Fake):
    """Times out before its first byte, as a server busy with a long queue does."""

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        raise APITimeoutError("no first byte in time", phase="first_byte")


async def test_a_busy_server_that_times_out_stays_in_rotation_with_a_smaller_limit() -> None:
    a, b = Busy("a"), Fake("b")
    pool = EndpointGroup([a, b], limits=[8, 8], health=FAST)
    pool.servers[1].sent = 1000  # a first
    answer = await Asker(pool)()
    assert answer.text.startswith("b:")  # the request went on to b at once
    assert [s.state for s in pool.states()] == ["up", "up"]  # busy is not broken
    assert pool.servers[0].limit.limit == 4
