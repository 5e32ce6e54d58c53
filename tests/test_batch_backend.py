"""The batch backend in-process: when a stage is sent (quiescence, not a timer), resuming stored
batches, the pure helpers (file splitting, stage names, the display lines) and the config."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coevol.config import BATCH_SAMPLES, Config, Price
from coevol.errors import ConfigError
from coevol.llm.batch import (
    BatchBackend,
    BatchLimits,
    BatchView,
    describe_batches,
    gate_for,
    split_lines,
    stage_of,
    work_unit,
)
from coevol.llm.batch_api import BatchAPI, input_line
from coevol.llm.types import ChatRequest, Completion
from coevol.store.sqlite import Store
from coevol.testing import FakeOpenAIServer, ResponderBackend


def answer(body: dict[str, Any]) -> str:
    return "re: " + str(body["messages"][-1]["content"])


def ask(text: str, endpoint: str = "e") -> ChatRequest:
    return ChatRequest(endpoint, "fake-model", ({"role": "user", "content": text},))


def backend(server: FakeOpenAIServer, store: Store | None = None, **kw: Any) -> BatchBackend:
    online = ResponderBackend(answer, endpoint=server.base_url)
    return BatchBackend(online, BatchAPI(server.base_url), store=store, poll=0.001, **kw)


async def test_a_stage_goes_out_once_every_unit_waits_not_after_a_timer() -> None:
    async with FakeOpenAIServer(answer) as server:
        b = backend(server)
        gate_for().debounce = 3600.0  # the fallback would never fire in this test

        async def sample(i: int) -> list[str]:
            with work_unit():
                first = await asyncio.gather(b.complete(ask(f"{i}a")), b.complete(ask(f"{i}b")))
                await asyncio.sleep(0)  # some work between stages
                second = await b.complete(ask(f"{i}c " + first[0].text))
                return [first[0].text, first[1].text, second.text]

        try:
            results = await asyncio.wait_for(asyncio.gather(*(sample(i) for i in range(3))), 30)
        finally:
            await b.aclose()
        sizes = [len(s.lines) for s in server.batches.submitted]
    assert results[2] == ["re: 2a", "re: 2b", "re: 2c re: 2a"]
    assert sizes == [6, 3]  # two stages, two batches


async def test_without_declared_units_the_debounce_sends_the_queue() -> None:
    async with FakeOpenAIServer(answer) as server:
        b = backend(server)
        gate_for().debounce = 0.05
        try:
            done = await asyncio.wait_for(asyncio.gather(*(b.complete(ask(str(i))) for i in range(4))), 30)
        finally:
            await b.aclose()
    assert [c.text for c in done] == ["re: 0", "re: 1", "re: 2", "re: 3"]
    assert [len(s.lines) for s in server.batches.submitted] == [4]


async def test_a_stage_larger_than_a_file_is_split_within_the_limits() -> None:
    async with FakeOpenAIServer(answer) as server:
        b = backend(server, limits=BatchLimits(max_lines=2))

        async def one(i: int) -> str:
            with work_unit():
                return (await b.complete(ask(str(i)))).text

        try:
            texts = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(5))), 30)
        finally:
            await b.aclose()
    assert texts == [f"re: {i}" for i in range(5)]
    assert [len(s.lines) for s in server.batches.submitted] == [2, 2, 1]


async def test_a_stored_batch_is_polled_again_not_sent_again(tmp_path: Path) -> None:
    async with FakeOpenAIServer(answer) as server:
        api = BatchAPI(server.base_url)
        requests = [ask("x", server.base_url), ask("y", server.base_url)]
        file_id = await api.upload(b"".join(input_line(str(i), r) for i, r in enumerate(requests)), "f")
        created = await api.create(file_id)
        await api.aclose()
        with Store(tmp_path / "s.db") as store:  # what a run killed after its create had stored
            store.put_batch(file_id, server.base_url, [("0", requests[0].key()), ("1", requests[1].key())])
            store.set_batch_id(file_id, created.id)
        with Store(tmp_path / "s.db") as store:
            b = backend(server, store)

            async def one(r: ChatRequest) -> Completion:
                with work_unit():
                    return await b.complete(r)

            try:
                done = await asyncio.wait_for(asyncio.gather(*(one(r) for r in requests)), 30)
            finally:
                await b.aclose()
            assert store.open_batches(server.base_url) == []
            assert store.get_call(requests[0].key()) is not None  # answers stored for a later rerun
        assert len(server.batches.submitted) == 1
    assert [c.text for c in done] == ["re: x", "re: y"]


@pytest.mark.parametrize("created", [True, False])
async def test_a_run_killed_between_upload_and_create_finds_or_creates_its_batch_once(
    tmp_path: Path, created: bool
) -> None:
    async with FakeOpenAIServer(answer) as server:
        api = BatchAPI(server.base_url)
        request = ask("x", server.base_url)
        file_id = await api.upload(input_line("0", request), "f")
        if created:
            await api.create(file_id)  # the provider created it; the run died before storing its id
        await api.aclose()
        with Store(tmp_path / "s.db") as store:
            store.put_batch(file_id, server.base_url, [("0", request.key())])
            b = backend(server, store)
            try:
                with work_unit():
                    done = await asyncio.wait_for(b.complete(request), 30)
            finally:
                await b.aclose()
        assert len(server.batches.submitted) == 1
    assert done.text == "re: x"


def test_a_0_2_store_opens_and_gains_the_batch_tables(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, role TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT,"
        " created REAL NOT NULL);"
        "INSERT INTO calls VALUES ('k', 'judge', 'm', 'old answer', 1, 2, 'stop', 0);"
    )
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.get_call("k") == Completion("old answer", 1, 2, "stop", cached=True)
        assert store.open_batches("any") == []


# --- pure helpers ---------------------------------------------------------------------------------


def test_split_lines_respects_lines_and_bytes() -> None:
    lines = [b"x" * n for n in (4, 4, 4, 9, 1)]
    assert split_lines(lines, BatchLimits(max_lines=2, max_bytes=100)) == [[0, 1], [2, 3], [4]]
    assert split_lines(lines, BatchLimits(max_lines=10, max_bytes=9)) == [[0, 1], [2], [3], [4]]
    assert split_lines([], BatchLimits()) == []


def test_stage_names() -> None:
    assert stage_of({"positive": 3, "critical": 3}) == "debate-1"
    assert stage_of({"positive/memory": 3, "judge/reask": 1, "editor": 2}) == "debate-2, edit, judge re-ask"
    assert stage_of({"other": 1}) == "other"


def test_the_display_lines() -> None:
    views = [
        BatchView("file-1", "batch_a", "debate-2", 7, 400, "in_progress", 120, submitted=0.0),
        BatchView("file-2", None, "judge", 8, 10, "uploading", submitted=100.0),
    ]
    assert describe_batches(views, 125.0) == [
        "batch batch_a in progress 120/400 · stage 7: debate-2 · waited 2m05s",
        "batch file-2 uploading · stage 8: judge · waited 25s",
    ]


# --- config ---------------------------------------------------------------------------------------


def test_batch_prices_default_to_half_and_follow_the_role() -> None:
    config = Config.from_mapping(
        {
            "base_url": "http://h/v1",
            "batch": True,
            "price": {"prompt": 2.0, "completion": 8.0},
            "roles": {
                "judge": {"batch": False},
                "editor": {"batch_price": {"prompt": 0.3, "completion": 0.5}},
            },
        }
    )
    assert config.role("positive").price == Price(prompt=1.0, completion=4.0)
    assert config.role("judge").price == Price(prompt=2.0, completion=8.0)  # this role stays online
    assert config.role("editor").price == Price(prompt=0.3, completion=0.5)
    assert config.online_price("positive") == Price(prompt=2.0, completion=8.0)
    assert config.batched_roles() == ["positive", "critical", "advisor", "editor"]
    assert config.samples_in_flight == BATCH_SAMPLES
    assert Config.from_mapping({"base_url": "http://h/v1"}).samples_in_flight is None


async def test_the_embedded_model_or_several_servers_cannot_batch() -> None:
    from coevol.engine.build import build_engine

    with pytest.raises(ConfigError, match="embedded model, which has no Batch API"):
        await build_engine(Config.from_mapping({"batch": True}))
    with pytest.raises(ConfigError, match="a batch goes to one server"):
        await build_engine(Config.from_mapping({"base_url": ["http://a/v1", "http://b/v1"], "batch": True}))


async def test_a_batch_past_its_window_is_cancelled_not_waited_on_forever() -> None:
    from coevol.errors import ServerError
    from coevol.testing.batches import BatchTimeline

    async with FakeOpenAIServer(answer) as server:
        server.batches.timeline = BatchTimeline(in_progress=10**9)  # never finishes by itself
        b = backend(server, grace=0.0, clock=lambda: 4e9)  # long after expires_at

        async def one(i: int) -> str:
            with work_unit():
                try:
                    return (await b.complete(ask(str(i)))).text
                except ServerError as exc:
                    return f"error: {exc}"

        try:
            results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(2))), 30)
        finally:
            await b.aclose()
        assert server.batches.submitted[0].status == "cancelled"
    assert all(r.startswith("error: batch line") and "batch_cancelled" in r for r in results), results


def test_the_progress_lines_of_a_batched_run() -> None:
    from coevol.cli.progress import batch_lines
    from coevol.engine.dispatch import RunStats

    class Sent:
        def __init__(self) -> None:
            self.batches_sent = 3
            self.views = {"t": BatchView("file-1", "batch_a", "edit", 4, 10, "validating", submitted=0.0)}

    stats = RunStats()
    stats.batches = [Sent()]
    assert batch_lines(stats, 5.0) == [
        "batches: 3 sent, 1 in flight",
        "batch batch_a validating · stage 4: edit · waited 5s",
    ]
    assert batch_lines(RunStats(), 5.0) == []
