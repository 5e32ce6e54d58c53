"""The fault model shared by the fake server and the in-process fakes. Pure: no I/O here.

A ``Fault`` says what goes wrong with one request; a ``FaultPolicy`` decides, from the request body
and how many times that same body arrived before, which fault (if any) a request gets. Policies
depend only on their inputs, so a run with faults is reproducible whatever the request order or
concurrency, and a retry (the same body seen again) can be told from a first attempt.

Kinds fall in three groups:

- errors the client must translate: ``RATE_LIMIT`` (429, ``Retry-After`` configurable),
  ``SERVER_ERROR``, ``BAD_REQUEST``, ``AUTH``, ``CONTEXT_LENGTH``, ``HOSTILE_ERROR`` (an error body
  carrying console markup and terminal escape sequences, ``HOSTILE_TEXT``), ``GARBAGE`` (HTML where
  JSON was expected), ``DISCONNECT``;
- answers that parse but must not be trusted: ``EMPTY`` (an empty text), ``TRUNCATED`` (the
  responder's text cut short, ``finish_reason`` "length"), ``HUGE`` (``size`` bytes of text,
  whatever ``max_tokens`` asked);
- time: ``HANG`` (no byte at all for ``hang_seconds``, then a normal answer), ``STALL`` (the
  status line and headers at once, then no byte of the body for ``hang_seconds``), ``DRIP`` (the
  status line and headers at once, then the answer one byte every ``interval`` seconds: progress,
  but too slow) and ``ENDLESS`` (a chunked answer whose first chunk comes at once and whose
  terminating chunk never does: after ``hang_seconds`` of silence the connection is closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

__all__ = [
    "HOSTILE_TEXT",
    "Fault",
    "FaultKind",
    "FaultPolicy",
    "always",
    "body_digest",
    "canonical_body",
    "first_attempt_faults",
    "mentioning",
]

HOSTILE_TEXT: Final = (
    "bad [/b] request [bold red]markup[/] [link=http://127.0.0.1:9/]x[/link] "
    "\x1b]0;pwn\x07\x1b[2J\x1b[31mred\x1b[0m \x1b]8;;http://127.0.0.1:9/\x07link\x1b]8;;\x07 \r\x08end"
)
"""A server error message that attacks a terminal: rich markup (an unbalanced ``[/b]`` raises
``MarkupError``), a window-title OSC, clear-screen and colour CSIs, an OSC 8 hyperlink, CR and BS."""


class FaultKind(StrEnum):
    """What can go wrong with one request; the module docstring says what each one sends."""

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    HANG = "hang"
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    CONTEXT_LENGTH = "context_length"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    HUGE = "huge"
    STALL = "stall"
    HOSTILE_ERROR = "hostile_error"
    DRIP = "drip"
    ENDLESS = "endless"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; each field is read only by the kinds named below.

    ``retry_after`` (``RATE_LIMIT``): the ``Retry-After`` header, seconds or a preformatted string
    (an HTTP-date, or junk to test a client's parser), ``None`` to omit it. ``hang_seconds``
    (``HANG``, ``STALL``, ``ENDLESS``): how long nothing is sent. ``interval`` (``DRIP``): seconds
    between two bytes of the answer. ``message``: the error text (``HOSTILE_ERROR``
    defaults to ``HOSTILE_TEXT``). ``size`` (``HUGE``): bytes of answer text. ``keep`` (``TRUNCATED``):
    characters of the responder's text kept, half of it when ``None``. ``status``
    (``HOSTILE_ERROR``): the HTTP status it is sent with (400 fatal, 5xx retryable).
    """

    kind: FaultKind
    retry_after: float | str | None = 1.0
    hang_seconds: float = 30.0
    message: str | None = None
    size: int = 10_000_000
    keep: int | None = None
    status: int = 400
    interval: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.size < 0 or (self.keep is not None and self.keep < 0):
            raise ValueError("Fault size and keep must not be negative")
        if self.interval < 0 or self.hang_seconds < 0:
            raise ValueError("Fault interval and hang_seconds must not be negative")
        if not 400 <= self.status <= 599:
            raise ValueError(f"Fault status must be an HTTP error status, got {self.status}")

    def truncate(self, text: str) -> str:
        """The part of ``text`` a ``TRUNCATED`` answer keeps."""
        return text[: len(text) // 2 if self.keep is None else self.keep]

    def huge_text(self) -> str:
        """``size`` bytes of ASCII words: big enough to hurt, cheap to build."""
        unit = "huge "
        return (unit * (self.size // len(unit) + 1))[: self.size]

    def error_message(self) -> str:
        """The error text this fault sends (its own ``message``, or the kind's default)."""
        if self.message is not None:
            return self.message
        return HOSTILE_TEXT if self.kind is FaultKind.HOSTILE_ERROR else _DEFAULT_MESSAGES.get(self.kind, "")


_DEFAULT_MESSAGES: Final = {
    FaultKind.RATE_LIMIT: "rate limit reached",
    FaultKind.SERVER_ERROR: "internal server error",
    FaultKind.BAD_REQUEST: "invalid request",
    FaultKind.AUTH: "invalid API key",
    FaultKind.CONTEXT_LENGTH: "This model's maximum context length is 2048 tokens; the request is longer.",
}

FaultPolicy = Callable[[dict[str, Any], int], Fault | None]
"""``(body, times_seen_before) -> Fault | None``; the count is 0 the first time a body arrives."""


def canonical_body(body: Any) -> bytes:
    """A request body as canonical JSON (sorted keys), so key order never changes its identity."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def body_digest(body: Any) -> str:
    """Identity of a request body: sha256 of its canonical JSON (sorted keys)."""
    return hashlib.sha256(canonical_body(body)).hexdigest()


def _as_fault(item: Fault | FaultKind | str) -> Fault:
    return item if isinstance(item, Fault) else Fault(FaultKind(item))


def first_attempt_faults(kinds: Sequence[Fault | FaultKind | str], rate: float, seed: int = 0) -> FaultPolicy:
    """Fail the first attempt of a fraction ``rate`` of distinct bodies; retries always succeed.

    Which bodies fail, and with which fault, depends only on the body and ``seed``, so a run is
    reproducible regardless of request order or concurrency.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    faults = tuple(_as_fault(k) for k in kinds)
    if not faults and rate > 0:
        raise ValueError("first_attempt_faults needs at least one fault kind")
    salt = seed.to_bytes(8, "little", signed=True)

    def policy(body: dict[str, Any], seen: int) -> Fault | None:
        if seen or rate <= 0.0:
            return None
        digest = hashlib.sha256(salt + canonical_body(body)).digest()
        if int.from_bytes(digest[:8], "little") >= rate * 2.0**64:
            return None
        return faults[int.from_bytes(digest[8:16], "little") % len(faults)]

    return policy


def always(fault: Fault | FaultKind | str) -> FaultPolicy:
    """Fail every request with ``fault``."""
    chosen = _as_fault(fault)

    def policy(body: dict[str, Any], seen: int) -> Fault | None:
        return chosen

    return policy


def mentioning(marker: str, fault: Fault | FaultKind | str | None) -> FaultPolicy:
    """``fault`` for every request (every attempt) whose messages contain ``marker``; else none.

    Aims a fault at one row (put the marker in its instruction) or one role (a phrase of its prompt).
    """
    chosen = None if fault is None else _as_fault(fault)

    def policy(body: dict[str, Any], seen: int) -> Fault | None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        hit = any(isinstance(m, dict) and marker in str(m.get("content", "")) for m in messages)
        return chosen if hit else None

    return policy
