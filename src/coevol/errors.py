"""The exception tree. Provider errors are translated once, at the client boundary, into these.

CoevolError
├── ConfigError                 invalid configuration or CLI flags
│   └── LogprobsMissing         --judge prob against a server that returns no logprobs
├── DataError                   a row that cannot be refined (kept as data, see ``BadRow``)
├── ParseError                  a model answer we could not parse; carries ``raw``
├── BudgetExceeded              ``--max-errors`` / ``--max-budget`` reached
├── MissingExtra                an optional dependency is not installed; says the ``pip install``
├── ModelAssetError             the embedded GGUF is missing or corrupt
├── OutputError                 an output path refused before the run, or a file that cannot be written
│   └── NoSpace                 the disk or quota is full (the previous output is intact)
├── StoreError                  the run store or call cache is corrupt, locked or cannot be written
├── TraceError                  a file that cannot be read as a trace (missing, not a trace)
│   └── TraceSchemaError        a trace of another schema version
└── LLMError                    anything that went wrong talking to a model
    ├── RetryableError          worth trying again after a pause
    │   ├── RateLimitError      HTTP 429; ``retry_after`` seconds when the server said so
    │   ├── ServerError         HTTP 5xx
    │   ├── APIConnectionError  refused, reset, DNS ...
    │   ├── APITimeoutError     no progress in time; ``phase``: connect, first_byte, idle or total
    │   └── UnusableAnswer      an answer with no text (content null, tool calls, empty): asked again
    └── FatalError              retrying cannot help; fail fast
        ├── AuthenticationError HTTP 401/403
        ├── NotFoundError       HTTP 404 (wrong base URL or model name)
        ├── ResponseTooLarge    an answer body past ``max_answer_bytes`` (a server ignoring max_tokens)
        └── BadRequestError     HTTP 400/422 and other 4xx
            └── ContextLengthError  the prompt does not fit the model's context
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "CoevolError",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "FatalError",
    "LLMError",
    "LogprobsMissing",
    "MissingExtra",
    "ModelAssetError",
    "NoSpace",
    "NotFoundError",
    "OutputError",
    "ParseError",
    "RateLimitError",
    "ResponseTooLarge",
    "RetryableError",
    "ServerError",
    "StoreError",
    "TimeoutPhase",
    "TraceError",
    "TraceSchemaError",
    "UnusableAnswer",
]

TimeoutPhase: TypeAlias = Literal["connect", "first_byte", "idle", "total"]
"""Which HTTP timeout fired (``APITimeoutError.phase``)."""


class CoevolError(Exception):
    """Base of every error coevol raises on purpose."""


class ConfigError(CoevolError):
    """Invalid configuration, template or command-line flag."""


class LogprobsMissing(ConfigError):
    """``--judge prob`` asked for logprobs and the server answered without them: refused at the
    first judge call, never a silent fall back to discrete verdicts."""


class DataError(CoevolError):
    """A dataset row that cannot be refined; ``line`` is 1-based when known."""

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.source = source


class ParseError(CoevolError):
    """A model answer that did not parse; ``raw`` keeps the text for the trace."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class BudgetExceeded(CoevolError):
    """The run passed its error or money budget and stopped cleanly."""


class MissingExtra(CoevolError):
    """An optional dependency is missing; the message carries the exact install command."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"the optional dependency for {feature} is not installed: pip install 'coevol[{extra}]'"
        )
        self.extra = extra


class ModelAssetError(CoevolError):
    """The embedded model file is missing, incomplete or fails its checksum."""


class OutputError(CoevolError):
    """An output path that would lose or clobber a file, or a write that failed (disk full, permissions)."""


class StoreError(CoevolError):
    """The SQLite run store or call cache cannot be used; the message names the file and what to do."""


class NoSpace(OutputError):
    """The disk (or quota) is full: the run stopped, the previous output is intact, a rerun resumes."""


class TraceError(CoevolError):
    """A file that cannot be read as a trace: missing, a folder, or not a trace at all."""


class TraceSchemaError(TraceError):
    """A trace line of another schema version (or malformed): refused, never guessed at."""


class LLMError(CoevolError):
    """A failed model call. ``status`` is the HTTP status when there was one."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(LLMError):
    """Transient: the same request may succeed after a pause."""

    retryable = True


class RateLimitError(RetryableError):
    """HTTP 429. ``retry_after`` is the server's ``Retry-After`` in seconds, if given."""

    def __init__(self, message: str, *, status: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ServerError(RetryableError):
    """HTTP 5xx."""


class APIConnectionError(RetryableError):
    """The connection failed or was reset before an answer arrived."""


class APITimeoutError(RetryableError):
    """No progress within one of the HTTP timeouts; the request was cancelled (its connection closed).

    ``phase`` names the timeout that fired, so a scheduler can tell a stalled server from a busy one:
    ``"connect"`` (no connection), ``"first_byte"`` (the request was sent and nothing came back: for a
    non-streaming completion that is the server's queue plus generation, so a busy server looks like
    this too), ``"idle"`` (the answer had begun and then stopped: a stalled server), ``"total"``
    (``request_timeout``, the cap on the whole exchange, e.g. a server that drips). ``None`` when
    unknown. ``stalled`` says whether the server stopped making progress (every phase but
    ``first_byte``, which a busy but healthy server's queue causes too).
    """

    def __init__(self, message: str, *, status: int | None = None, phase: TimeoutPhase | None = None) -> None:
        super().__init__(message, status=status)
        self.phase = phase

    @property
    def stalled(self) -> bool | None:
        """``True`` for connect, idle and total, ``False`` for first_byte, ``None`` when unknown."""
        return None if self.phase is None else self.phase != "first_byte"


class UnusableAnswer(RetryableError):
    """An answer a role cannot use (``content: null``, tool calls instead of text, an empty string):
    a failed call, asked again like a transient failure, then the sample fails with this reason."""


class FatalError(LLMError):
    """Permanent: the same request will fail again."""


class AuthenticationError(FatalError):
    """HTTP 401/403: missing or wrong API key."""


class NotFoundError(FatalError):
    """HTTP 404: wrong base URL or model name."""


class ResponseTooLarge(FatalError):
    """The answer body passed the size cap; it was not read further, nothing of it is kept."""


class BadRequestError(FatalError):
    """HTTP 400/422 or another 4xx the server will not accept."""


class ContextLengthError(BadRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""
