"""HTTP timeouts on progress, not on queue time. Pure: no I/O here.

One exchange moves through phases, each with its own limit: ``connect`` (a connection, TLS
included), ``first_byte`` (from sending the request to the first byte of the answer), ``idle`` (the
longest silence between two reads once the answer has begun) and ``total`` (``request_timeout``, a
cap on the whole exchange that catches a server dripping bytes just fast enough to never be idle).

For a non-streaming chat completion the first byte only comes once the whole answer is generated,
so ``first_byte`` covers the server's queue and its generation: it is long by default (600 s, what
the whole request had before), because a busy server is not a broken one. ``connect`` and ``idle``
are short (10 s, 30 s): a server that takes longer to accept a connection, or that stops in the
middle of an answer it has started, has stalled. The error names the phase that fired
(``APITimeoutError.phase``), so a scheduler can take a stalled server out of rotation and merely
wait less on a busy one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from coevol.errors import ConfigError, TimeoutPhase

__all__ = [
    "DEFAULT_CONNECT",
    "DEFAULT_FIRST_BYTE",
    "DEFAULT_IDLE",
    "DEFAULT_TOTAL",
    "Clock",
    "Timeouts",
    "timeout_message",
]

DEFAULT_CONNECT: Final = 10.0
DEFAULT_FIRST_BYTE: Final = 600.0
DEFAULT_IDLE: Final = 30.0
DEFAULT_TOTAL: Final = 900.0

# The setting a user changes for each phase, as the config and the flags spell it.
_SETTING: Final[dict[TimeoutPhase, str]] = {
    "connect": "connect_timeout",
    "first_byte": "first_byte_timeout",
    "idle": "idle_timeout",
    "total": "request_timeout",
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed per phase of one HTTP exchange; ``total=None``: no cap on the whole."""

    connect: float = DEFAULT_CONNECT
    first_byte: float = DEFAULT_FIRST_BYTE
    idle: float = DEFAULT_IDLE
    total: float | None = DEFAULT_TOTAL

    def __post_init__(self) -> None:
        for phase in ("connect", "first_byte", "idle", "total"):
            value = getattr(self, phase)
            if value is None and phase == "total":
                continue
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{_SETTING[phase]} must be a positive number of seconds, got {value!r}")

    def within(self, seconds: float) -> Timeouts:
        """The same limits, none longer than ``seconds`` (a setup probe that must not stall a run)."""
        total = seconds if self.total is None else min(self.total, seconds)
        return replace(
            self,
            connect=min(self.connect, seconds),
            first_byte=min(self.first_byte, seconds),
            idle=min(self.idle, seconds),
            total=total,
        )


class Clock:
    """The deadlines of one exchange: each phase's limit, never past the exchange's own end.

    ``at(phase, now)`` is the loop time at which ``phase`` would time out if nothing happened from
    ``now``; afterwards ``phase`` says which timeout that deadline belongs to (``"total"`` when the
    whole-exchange cap comes first), so the error can name the one that fired.
    """

    __slots__ = ("_end", "phase", "timeouts")

    def __init__(self, timeouts: Timeouts, start: float) -> None:
        self.timeouts = timeouts
        self._end = math.inf if timeouts.total is None else start + timeouts.total
        self.phase: TimeoutPhase = "connect"

    def at(self, phase: TimeoutPhase, now: float) -> float:
        limit = now + self.seconds(phase)
        if limit < self._end:
            self.phase = phase
            return limit
        self.phase = "total"
        return self._end

    def seconds(self, phase: TimeoutPhase) -> float:
        """The limit of ``phase`` in seconds (``inf`` for an uncapped total)."""
        value = getattr(self.timeouts, phase)
        return math.inf if value is None else float(value)


def timeout_message(phase: TimeoutPhase, where: str, seconds: float) -> str:
    """What timed out, in words a user can act on: the phase, its limit and the setting to change."""
    setting = f"{_SETTING[phase]}={seconds:g}s"
    if phase == "connect":
        return f"no connection to {where} within {setting}; request not sent"
    if phase == "first_byte":
        return (
            f"no answer from {where} within {setting} of sending the request (the server's queue "
            "and generation count here); request cancelled"
        )
    if phase == "idle":
        return f"the answer from {where} stopped for {setting} midway; request cancelled"
    return f"the exchange with {where} ran past {setting}; request cancelled"
