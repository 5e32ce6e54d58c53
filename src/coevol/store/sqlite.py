"""The run store: every finished LLM call and every finished sample, durable the moment it lands.

One SQLite file beside the output, in WAL mode. Calls are keyed by ``ChatRequest.key()`` (a hash of
endpoint, model, sampling parameters and messages), so a rerun after a crash replays what it has
and sends only what is missing, and changing one role's prompt or model re-sends only the calls
that depend on it. Failures go to their own table and are never served as answers.

Writes are group-committed: inside an event loop, every write made during one loop iteration goes
into a single transaction committed at the start of the next one, and ``await store.synced()``
returns only once that commit is done. The dispatcher awaits it before handing an answer to the
loop, so a call is on disk before anything depends on it, at the cost of one transaction per loop
iteration instead of one per call (a commit costs more than the whole rest of a cached call).
Outside an event loop every write commits at once. WAL with ``synchronous=NORMAL`` survives a
killed process (not a power cut, which would need ``FULL`` and an fsync per commit).

Commits then never wait for the disk; only checkpoints (copying the WAL back into the database)
fsync. They run in a background thread on their own connection, so the event loop never blocks on
an fsync; SQLite releases the GIL while it works.

The same file may serve as a call cache that several runs (and outputs) share at once: SQLite's
own locking serialises their commits. Every ``sqlite3.Error`` is translated here, once, into a
one-line ``StoreError`` naming the file and what to do; a store that is a symbolic link is refused
(SQLite would write through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coevol.domain import Choice, Completion, TokenLogprob
from coevol.errors import NoSpace, StoreError
from coevol.io import jsonrow
from coevol.io.guard import check_not_links
from coevol.llm.logprobs import logprobs_from_json, logprobs_to_json

__all__ = ["OpenBatch", "Store", "bound_time", "connect_read_only", "schema_problem"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL,
    logprobs TEXT
);
CREATE TABLE IF NOT EXISTS call_choices (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    PRIMARY KEY (key, idx)
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
CREATE TABLE IF NOT EXISTS batches (
    file_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    batch_id TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_calls (
    file_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (file_id, custom_id)
);
"""

_COLUMNS = {
    "calls": (
        "key",
        "role",
        "model",
        "text",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "created",
        "logprobs",
    ),
    "call_failures": ("key", "role", "error_type", "message", "created"),
    "samples": ("sample_key", "status", "payload", "created"),
    "batches": ("file_id", "endpoint", "batch_id", "done", "created"),
    "batch_calls": ("file_id", "custom_id", "key"),
}
_ADDED = {"calls": 1}  # trailing columns a store of coevol 0.2 lacks (``logprobs``); added on open


def schema_problem(db: sqlite3.Connection) -> str | None:
    """Why the open database is not a coevol store (its tables replaced by views, extra triggers,
    other columns), or None. A hostile file must be refused before a query runs on it: a
    recursive view named ``calls`` never finishes a ``COUNT(*)``."""
    objects = db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')")
    for kind, name in objects.fetchall():
        if kind == "trigger":
            return f"it holds a trigger ({name!r}), which coevol never creates"
        if name in _COLUMNS and kind != "table":
            return f"{name!r} is a {kind}, not a table"
    for table, expected in _COLUMNS.items():
        found = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall())
        older = expected[: len(expected) - _ADDED.get(table, 0)]
        if found and found not in (expected, older):
            return f"the table {table!r} has the columns {', '.join(found)}"
    return None


_READ_SECONDS = 30.0  # a read-only query on a real store takes well under a second


def bound_time(db: sqlite3.Connection, seconds: float) -> None:
    """Interrupt any statement on ``db`` that runs past ``seconds`` (it raises ``OperationalError``)."""
    deadline = time.monotonic() + seconds
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)


_PUT_CALL = "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PUT_CHOICE = "INSERT OR REPLACE INTO call_choices VALUES (?, ?, ?, ?)"
_GET_CALL = "SELECT text, prompt_tokens, completion_tokens, finish_reason, logprobs FROM calls WHERE key = ?"
_PUT_FAILURE = "INSERT INTO call_failures VALUES (?, ?, ?, ?, ?)"
_PUT_SAMPLE = "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)"

CallRow = tuple[str, str, str, str, int, int, str | None, float, str | None]


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """A batch this store submitted (or was about to) and has not finished: resumed, never resent.

    ``batch_id`` is ``None`` when the run stopped between the upload and the provider's answer.
    """

    file_id: str
    batch_id: str | None
    lines: dict[str, str]  # custom_id -> call key


SampleRow = tuple[str, str, bytes, float]


def _choice_rows(choices: dict[str, tuple[Choice, ...]]) -> list[tuple[str, int, str, str | None]]:
    """The ``call_choices`` rows of buffered calls: choice 1 onwards (choice 0 is the call's row)."""
    return [(key, i, c.text, c.finish_reason) for key, more in choices.items() for i, c in enumerate(more, 1)]


def _add_logprobs_column(db: sqlite3.Connection) -> None:
    """A store written before ``--judge prob`` gains the ``logprobs`` column (NULL for its calls)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(calls)").fetchall()}
    if "logprobs" not in columns:
        try:
            db.execute("ALTER TABLE calls ADD COLUMN logprobs TEXT")
        except sqlite3.OperationalError as exc:  # another process added it a moment ago
            if "duplicate column" not in str(exc).lower():
                raise


def _logprobs(text: str | None) -> tuple[TokenLogprob, ...] | None:
    """Stored logprobs; ones that no longer read back are dropped (a caller needing them refuses)."""
    try:
        return logprobs_from_json(text)
    except ValueError:
        return None


def store_error(path: Path, exc: sqlite3.Error) -> StoreError | NoSpace:
    """A SQLite error as one line: which file, what happened, what to do."""
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return NoSpace(f"cannot write {path}: {text}. Free some space and rerun the same command to resume")
    if "locked" in low or "busy" in low:
        return StoreError(f"{path} is in use by another process for too long ({text}); try again later")
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return StoreError(f"cannot open {path} for writing ({text}); check the folder's permissions")
    return StoreError(
        f"{path} is not a usable coevol store ({text}): it is corrupted, truncated or another kind of "
        "file. Move it aside (or delete it) and rerun; the calls it held will be sent again"
    )


def _companions(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that leaves no ``-wal``/``-shm`` file behind (issue 16).

    A store that a run closed cleanly has no WAL: it is opened ``immutable``, which never creates
    the shared-memory file SQLite would otherwise leave beside it. A store with a WAL (a run in
    progress, or one that was killed) is opened plainly read-only, so its latest commits are seen.
    Only a regular file is opened (a FIFO would hang), every statement is interrupted after
    ``_READ_SECONDS``, and a file that is not a coevol store (``schema_problem``) raises
    ``sqlite3.DatabaseError`` before any query runs on it.
    """
    if not path.is_file():
        raise sqlite3.OperationalError(f"{path.name} is not a regular file")
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    db = sqlite3.connect(uri + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1"), uri=True)
    try:
        bound_time(db, _READ_SECONDS)
        problem = schema_problem(db)
        if problem is not None:
            raise sqlite3.DatabaseError(f"not a coevol store: {problem}")
    except BaseException:
        db.close()
        raise
    return db


class Store:
    """SQLite-backed cache of calls and sample results. Used from one thread (the event loop's)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        check_not_links(_companions(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of {self.path}: {exc.strerror or exc}") from None
        try:
            self._db = self._open()
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        self._checkpointer = _Checkpointer(self.path)
        self._calls: dict[str, CallRow] = {}
        self._choices: dict[str, tuple[Choice, ...]] = {}  # a call's choices after the first (n > 1)
        self._failures: list[tuple[str, str, str, str, float]] = []
        self._samples: dict[str, SampleRow] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a commit is queued on
        self._error: StoreError | NoSpace | None = None
        self.commits = 0  # transactions written, for benchmarks
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode; ``flush`` opens an explicit transaction around each batch.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            problem = schema_problem(db)
            if problem is not None:
                raise sqlite3.DatabaseError(f"not a coevol store: {problem}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
            db.executescript(_SCHEMA)
            _add_logprobs_column(db)
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
            for table in ("calls", "call_failures", "samples"):  # reads a page of each: garbage shows here
                db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    # group commit ------------------------------------------------------------------------------
    def _written(self) -> None:
        """A row was buffered: commit now without a loop, else once at the next loop iteration."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled is loop:
            return
        self._scheduled = loop
        loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = None
        with contextlib.suppress(StoreError, NoSpace):  # kept in ``_error``: waiters and later writes see it
            self.flush()

    def flush(self) -> None:
        """Commit every buffered row in one transaction, then release ``synced()`` waiters."""
        waiters, self._waiters = self._waiters, []
        if self._calls or self._failures or self._samples:
            calls, self._calls = self._calls, {}
            choices, self._choices = self._choices, {}
            failures, self._failures = self._failures, []
            samples, self._samples = self._samples, {}
            try:
                self._db.execute("BEGIN")
                if calls:
                    self._db.executemany(_PUT_CALL, calls.values())
                if choices:
                    self._db.executemany(_PUT_CHOICE, _choice_rows(choices))
                if failures:
                    self._db.executemany(_PUT_FAILURE, failures)
                if samples:
                    self._db.executemany(_PUT_SAMPLE, samples.values())
                self._db.execute("COMMIT")
                self.commits += 1
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                error = store_error(self.path, exc)
                self._error = error
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(error)
                raise error from None
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def synced(self) -> None:
        """Return once everything written so far is committed (at once when nothing is pending)."""
        self._check()
        if self._scheduled is None:
            return
        loop = asyncio.get_running_loop()
        if self._scheduled is not loop:  # queued on a loop that has ended: commit here and now
            self._scheduled = None
            self.flush()
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        await fut

    # calls -------------------------------------------------------------------------------------
    def get_call(self, key: str, *, choices: int = 1) -> Completion | None:
        """The stored answer; with ``choices`` > 1 (a request asking for ``n``) also its other choices."""
        row = self._calls.get(key)
        if row is not None:
            found: Any = (*row[3:7], row[8])
        else:
            found = self._query(_GET_CALL, (key,))
            if found is None:
                return None
        more = self._more(key) if choices > 1 else ()
        return Completion(
            found[0], found[1], found[2], found[3], cached=True, more=more, logprobs=_logprobs(found[4])
        )

    def _more(self, key: str) -> tuple[Choice, ...]:
        pending = self._choices.get(key)
        if pending is not None:
            return pending
        try:
            rows = self._db.execute(
                "SELECT text, finish_reason FROM call_choices WHERE key = ? ORDER BY idx", (key,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        return tuple(Choice(text, reason) for text, reason in rows)

    def put_call(self, key: str, role: str, model: str, completion: Completion) -> None:
        self._check()
        self._calls[key] = (
            key,
            role,
            model,
            completion.text,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.finish_reason,
            time.time(),
            logprobs_to_json(completion.logprobs),
        )
        if completion.more:
            self._choices[key] = completion.more
        self._written()

    def put_call_failure(self, key: str, role: str, error: BaseException) -> None:
        self._check()
        self._failures.append((key, role, type(error).__name__, str(error)[:2000], time.time()))
        self._written()

    def count_calls(self) -> int:
        self.flush()
        return int(self._query("SELECT COUNT(*) FROM calls")[0])

    def count_call_failures(self) -> int:
        self.flush()
        return int(self._query("SELECT COUNT(*) FROM call_failures")[0])

    # samples -----------------------------------------------------------------------------------
    def get_sample(self, sample_key: str) -> tuple[str, Any] | None:
        """The stored status and payload; a payload that is not JSON is a corrupted store."""
        pending = self._samples.get(sample_key)
        if pending is not None:
            return pending[1], jsonrow.loads(pending[2])
        row = self._query("SELECT status, payload FROM samples WHERE sample_key = ?", (sample_key,))
        if row is None:
            return None
        try:
            return row[0], jsonrow.loads(row[1])
        except (ValueError, TypeError) as exc:
            raise store_error(
                self.path, sqlite3.DatabaseError(f"a stored sample is not JSON: {exc}")
            ) from None

    def put_sample(self, sample_key: str, status: str, payload: dict[str, Any] | bytes) -> None:
        """Keep a finished sample; ``payload`` is its JSON object, or that object already encoded."""
        self._check()
        data = payload if isinstance(payload, bytes) else jsonrow.dumps(payload)
        self._samples[sample_key] = (sample_key, status, data, time.time())
        self._written()

    # batches -----------------------------------------------------------------------------------
    # Written at once, each in its own transaction (they are few): a batch is on disk before it is
    # created at the provider and its id before it is first polled, so a rerun never pays twice.
    def put_batch(self, file_id: str, endpoint: str, lines: Iterable[tuple[str, str]]) -> None:
        """An uploaded input file and its calls (``(custom_id, key)``), before the batch is created."""
        self._transaction(
            ("INSERT OR REPLACE INTO batches VALUES (?, ?, NULL, 0, ?)", [(file_id, endpoint, time.time())]),
            ("INSERT OR REPLACE INTO batch_calls VALUES (?, ?, ?)", [(file_id, c, k) for c, k in lines]),
        )

    def set_batch_id(self, file_id: str, batch_id: str) -> None:
        self._transaction(("UPDATE batches SET batch_id = ? WHERE file_id = ?", [(batch_id, file_id)]))

    def finish_batch(self, file_id: str) -> None:
        """The batch's answers are in ``calls`` (committed first): nothing of it is left to poll."""
        self.flush()
        self._transaction(("UPDATE batches SET done = 1 WHERE file_id = ?", [(file_id,)]))

    def open_batches(self, endpoint: str) -> list[OpenBatch]:
        """The unfinished batches of ``endpoint``, oldest first, with their calls."""
        try:
            rows = self._db.execute(
                "SELECT file_id, batch_id FROM batches WHERE endpoint = ? AND done = 0 ORDER BY created",
                (endpoint,),
            ).fetchall()
            found = []
            for file_id, batch_id in rows:
                lines = self._db.execute(
                    "SELECT custom_id, key FROM batch_calls WHERE file_id = ?", (file_id,)
                ).fetchall()
                found.append(OpenBatch(file_id, batch_id, dict(lines)))
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        return found

    def _transaction(self, *statements: tuple[str, list[tuple[Any, ...]]]) -> None:
        self._check()
        try:
            self._db.execute("BEGIN")
            for sql, rows in statements:
                self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise store_error(self.path, exc) from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """One row of a read, with SQLite's errors translated."""
        try:
            return self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None

    def close(self) -> None:
        """Commit what is buffered and close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._error is None:
                self.flush()
        finally:
            self._checkpointer.stop()
            with contextlib.suppress(sqlite3.Error):  # a failed final checkpoint leaves the WAL: still valid
                self._db.close()  # the last connection to close checkpoints and removes the WAL

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Checkpointer:
    """Copies the WAL into the database every ``interval`` seconds, off the event loop's thread."""

    def __init__(self, path: Path, interval: float = 0.5) -> None:
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coevol-store-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            while not self._stopping.wait(self._interval):
                # PASSIVE never blocks the writer; a busy moment just waits for the next round.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
