"""Shared fixtures: a fake OpenAI-compatible server on loopback, engines pointed at it, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from coevol.config import Config
from coevol.engine.build import Engine, build_engine
from coevol.llm import openai_http
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to

ALPACA_ROWS: list[dict[str, Any]] = [
    {"id": "a1", "instruction": "What is the area of a circle of radius 4?", "input": "", "output": "16"},
    {
        "id": "a2",
        "instruction": "Translate to French.",
        "input": "I miss you",
        "output": "Je t'aime",
        "src": 7,
    },
    {"id": "a3", "instruction": "Name a prime number.", "input": "<noinput>", "output": "9"},
]


@pytest.fixture(params=["lean", "aiohttp"])
def http_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once through each HTTP client: the backends it builds default to that one."""
    name: str = request.param
    monkeypatch.setattr(openai_http, "DEFAULT_TRANSPORT", name)
    return name


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    def write(name: str, data: Any) -> Path:
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
        else:
            path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        return path

    return write


@pytest.fixture
async def coevol_server() -> AsyncIterator[FakeOpenAIServer]:
    """A server whose judge accepts up to 2 edits per sample; 20 ms per request to show overlap."""
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(2)), latency=0.02) as server:
        yield server


async def make_engine(server: FakeOpenAIServer, **overrides: Any) -> Engine:
    config = Config(base_url=server.base_url, model="fake-model", **overrides)
    return await build_engine(config)


async def coevol_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m coevol.cli.main ARGS``; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coevol.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
