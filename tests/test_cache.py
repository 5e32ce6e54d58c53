"""A call cache several outputs share (``--cache``): never pay twice across outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coevol.api import arefine_file
from coevol.config import Config
from coevol.errors import OutputError, StoreError
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .engine_support import ThreadedServer, alpaca_rows, run_cli, start_cli, write_jsonl

ROWS = alpaca_rows(10, seed=11)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(1))) as s:
        yield s


def args(server: ThreadedServer, cache: Path) -> list[str]:
    return ["--base-url", server.base_url, "--model", "m", "-q", "--cache", str(cache)]


def test_a_second_output_from_the_same_input_sends_nothing(server: ThreadedServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    cache = tmp_path / "calls.db"
    start = server.count()
    first = run_cli("refine", data, "-o", tmp_path / "out1.json", *args(server, cache))
    assert first.returncode == 0, first.stderr
    paid = server.count() - start
    assert paid > 0
    start = server.count()
    second = run_cli("refine", data, "-o", tmp_path / "out2.jsonl", "--output-format", "sharegpt",
                     *args(server, cache))  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert server.count() == start  # every call came from the shared cache
    one = json.loads((tmp_path / "out1.json").read_text())
    two = [json.loads(line) for line in (tmp_path / "out2.jsonl").read_text().splitlines()]
    assert [r["output"] for r in one] == [r["conversations"][1]["value"] for r in two]
    # Without the cache the same second output would have paid again.
    start = server.count()
    third = run_cli("refine", data, "-o", tmp_path / "out3.jsonl", "--base-url", server.base_url,
                    "--model", "m", "-q")  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert server.count() - start == paid


def test_runs_sharing_a_cache_at_once_both_finish(server: ThreadedServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(30, seed=12))
    cache = tmp_path / "calls.db"
    procs = [
        start_cli("refine", data, "-o", tmp_path / f"out{i}.jsonl", *args(server, cache)) for i in (1, 2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert (tmp_path / "out1.jsonl").read_bytes() == (tmp_path / "out2.jsonl").read_bytes()
    start = server.count()
    again = run_cli("refine", data, "-o", tmp_path / "out3.jsonl", *args(server, cache))
    assert again.returncode == 0, again.stderr
    assert server.count() == start


async def test_a_corrupted_cache_is_one_clear_error(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    cache = tmp_path / "calls.db"
    cache.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(StoreError, match=r"calls\.db is not a usable coevol store"):
            await arefine_file(data, tmp_path / "out.jsonl", Config(base_url=fake.base_url, model="m"),
                               cache=cache)  # fmt: skip
        assert fake.requests == []


@pytest.mark.parametrize("name", ["out.jsonl", "in.jsonl", "out.jsonl.trace.jsonl", "out.jsonl.coevol.db"])
async def test_a_cache_that_is_one_of_the_runs_files_is_refused(tmp_path: Path, name: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match="refusing to run"):
            await arefine_file(data, tmp_path / "out.jsonl", Config(base_url=fake.base_url, model="m"),
                               cache=tmp_path / name)  # fmt: skip
        assert fake.requests == []
