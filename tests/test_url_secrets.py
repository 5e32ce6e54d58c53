"""A secret in the base URL reaches the server and nowhere else: not stdout, stderr, trace or store."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from coevol.llm.urls import has_userinfo, is_secret_param, masked_url, url_secrets
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, mentioning
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS, coevol_cli

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

QSECRET = "qsk-SECRET-0f1e2d3c4b"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://h/v1", "http://h/v1"),
        ("http://h/v1?api-key=abc123", "http://h/v1?api-key=***"),
        ("http://h/v1?api-version=2024-06-01&key=abc123", "http://h/v1?api-version=2024-06-01&key=***"),
        (
            "https://h/v1?token=t0k&x=1&access_token=a&sig=s",
            "https://h/v1?token=***&x=1&access_token=***&sig=***",
        ),
        (
            "http://h/v1?API_KEY=abc&X-Api-Key=def&monkey=banana",
            "http://h/v1?API_KEY=***&X-Api-Key=***&monkey=banana",
        ),
        ("http://user:pw@h:8/v1?a=1", "http://***@h:8/v1?a=1"),
        ("http://h/v1?key=abc#frag", "http://h/v1?key=***#***"),
        ("http://h/v1?flag&code=xyz", "http://h/v1?flag&code=***"),
    ],
)
def test_masked_url(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_secret_parameter_names() -> None:
    secret = [
        "key",
        "api-key",
        "api_key",
        "apikey",
        "x-api-key",
        "token",
        "access_token",
        "Signature",
        "password",
    ]
    plain = ["api-version", "model", "monkey", "keyboard", "tokens_limit", "v"]
    assert [n for n in secret if not is_secret_param(n)] == []
    assert [n for n in plain if is_secret_param(n)] == []


def test_url_secrets_lists_raw_and_decoded_values() -> None:
    assert url_secrets("http://h/v1?key=a%2Bb%3D&v=1") == ["a%2Bb%3D", "a+b="]
    assert url_secrets("http://me:pass123@h/v1") == ["me:pass123", "pass123"]
    assert url_secrets("http://h/v1?v=1") == []
    assert has_userinfo("http://me@h/v1") and not has_userinfo("http://h/v1?x=a@b")


async def test_a_query_key_appears_in_no_output_channel(tmp_path: Path) -> None:
    src = tmp_path / "data.json"
    rows = [*ALPACA_ROWS, {"instruction": "FAILME please", "input": "", "output": "x"}]
    src.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "refined.json"
    # One row's calls always fail with an error body that echoes the key: a failed-call record.
    policy = mentioning("FAILME", Fault(FaultKind.SERVER_ERROR, message=f"bad url ?api-key={QSECRET}"))
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1)), faults=policy) as server:
        base = f"{server.base_url}?api-version=1&api-key={QSECRET}"
        code, stdout, stderr = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", base, "--model", "fake-model",
            "--max-retries", "0", "--max-rounds", "1",
        )  # fmt: skip
        assert server.requests, "requests were sent"
        assert all(r.body for r in server.requests)
        config_code, config_out, config_err = await coevol_cli("config", "--base-url", base)
        shown = f"{server.base_url}?api-version=1&api-key=***"
    assert code in (0, 4), stderr
    assert config_code == 0 and "api-key=***" in config_out
    channels = {
        "stdout": stdout,
        "stderr": stderr,
        "config": config_out + config_err,
    }
    for path in tmp_path.iterdir():
        if path.is_file() and path.name.startswith("refined.json"):
            channels[path.name] = path.read_bytes().decode("utf-8", "replace")
    assert "refined.json.trace.jsonl" in channels and "refined.json.coevol.db" in channels
    leaked = [name for name, text in channels.items() if QSECRET in text]
    assert leaked == []
    trace = [json.loads(line) for line in (tmp_path / "refined.json.trace.jsonl").read_text().splitlines()]
    endpoints = {role["endpoint"] for t in trace for role in (t.get("roles") or {}).values()}
    assert endpoints == {shown}
    with closing(sqlite3.connect(tmp_path / "refined.json.coevol.db")) as db:
        failures = db.execute("SELECT message FROM call_failures").fetchall()
    assert failures and all("api-key=***" in m for (m,) in failures)
