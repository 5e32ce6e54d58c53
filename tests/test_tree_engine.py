"""Several choices per request (``n``) through the engine: body, HTTP parsing, store, replay."""

from __future__ import annotations

from pathlib import Path

from coevol.engine.dispatch import Dispatcher, Route
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest, Choice, Completion, GenParams
from coevol.store.sqlite import Store
from coevol.testing import FakeOpenAIServer, ScriptedBackend
from coevol.testing.server import Reply

MSGS = [{"role": "user", "content": "Judge it."}]


def test_n_and_seed_enter_the_body_and_the_key_only_when_asked() -> None:
    plain = ChatRequest("e", "m", tuple(MSGS))
    assert "n" not in plain.body() and "seed" not in plain.body()
    many = ChatRequest("e", "m", tuple(MSGS), GenParams(n=5, seed=7))
    assert many.body()["n"] == 5 and many.body()["seed"] == 7
    assert len({plain.key(), many.key(), ChatRequest("e", "m", tuple(MSGS), GenParams(seed=7)).key()}) == 3


def three(body: dict[str, object]) -> Reply:
    return Reply("one", more=("two", "three"))


async def test_the_http_backend_reads_every_choice_asked_for_and_only_those() -> None:
    async with FakeOpenAIServer(responder=three) as server:
        backend = OpenAIHTTPBackend(server.base_url, api_key=None)
        try:
            asked = await backend.complete(ChatRequest(server.base_url, "m", tuple(MSGS), GenParams(n=3)))
            single = await backend.complete(ChatRequest(server.base_url, "m", tuple(MSGS)))
            fewer = await backend.complete(ChatRequest(server.base_url, "m", tuple(MSGS), GenParams(n=2)))
        finally:
            await backend.aclose()
    assert [c.text for c in asked.choices()] == ["one", "two", "three"]
    assert single.choices() == (Choice("one", "stop"),)
    assert [c.text for c in fewer.choices()] == ["one", "two"]
    assert server.requests[0].body["n"] == 3 and "n" not in server.requests[1].body


async def test_choices_are_stored_and_replayed_with_the_call(tmp_path: Path) -> None:
    def script(request: ChatRequest, calls: int) -> Completion:
        return Completion("a", 3, 6, "stop", more=(Choice("b", "stop"), Choice("c", "length")))

    backend = ScriptedBackend(script)
    store = Store(tmp_path / "s.db")
    try:
        first = await Dispatcher({"critic": Route(backend, "m")}, store=store)("critic", MSGS, n=3, seed=11)
        assert backend.calls[0].request.params.n == 3 and backend.calls[0].request.params.seed == 11
    finally:
        store.close()
    with Store(tmp_path / "s.db") as again:
        dispatcher = Dispatcher({"critic": Route(backend, "m")}, store=again)
        replay = await dispatcher("critic", MSGS, n=3, seed=11)
        other_seed = await dispatcher("critic", MSGS, n=3, seed=12)
    assert replay.cached and replay.choices() == first.choices()
    assert [c.finish_reason for c in replay.choices()] == ["stop", "stop", "length"]
    assert not other_seed.cached and len(backend.calls) == 2
