"""The run store: every finished LLM call and every finished sample, durable the moment it lands.

One SQLite file beside the output, in WAL mode. Calls are keyed by ``ChatRequest.key()`` (a hash of
endpoint, model, sampling parameters and messages), so a rerun after a crash replays what it has
and sends only what is missing, and changing one role's prompt or model re-sends only the calls
that depend on it. Failures go to their own table and are never served as answers.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from coevol.llm.types import Completion

__all__ = ["Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS call_failures (
    key TEXT NOT NULL,
    role TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    sample_key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
"""


class Store:
    """SQLite-backed cache of calls and sample results. Used from one thread (the event loop's)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each write is its own transaction, committed before the call returns.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    # calls -------------------------------------------------------------------------------------
    def get_call(self, key: str) -> Completion | None:
        row = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM calls WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return Completion(row[0], row[1], row[2], row[3], cached=True)

    def put_call(self, key: str, role: str, model: str, completion: Completion) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                role,
                model,
                completion.text,
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.finish_reason,
                time.time(),
            ),
        )

    def put_call_failure(self, key: str, role: str, error: BaseException) -> None:
        self._db.execute(
            "INSERT INTO call_failures VALUES (?, ?, ?, ?, ?)",
            (key, role, type(error).__name__, str(error)[:2000], time.time()),
        )

    def count_calls(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    # samples -----------------------------------------------------------------------------------
    def get_sample(self, sample_key: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT status, payload FROM samples WHERE sample_key = ?", (sample_key,)
        ).fetchone()
        if row is None:
            return None
        return row[0], orjson.loads(row[1])

    def put_sample(self, sample_key: str, status: str, payload: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
            (sample_key, status, orjson.dumps(payload), time.time()),
        )

    def sample_statuses(self) -> Iterator[tuple[str, str]]:
        yield from self._db.execute("SELECT sample_key, status FROM samples")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
