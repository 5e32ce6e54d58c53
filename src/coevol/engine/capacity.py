"""How many requests a server runs at once, where the server says so (llama.cpp's server, vLLM).

Servers that queue rather than answer 429 (llama.cpp's server, vLLM, llama-cpp-python's) keep
every request they cannot run yet in their own queue, where a client's timeout counts the wait as
if it were work. Where the server reports its slots, each server's in-flight limit is capped at
that number, so requests wait on this side, where waiting costs nothing and is never mistaken for
a stalled server. vLLM does not report its batch size but reports, in ``/metrics``, how many
requests wait for one: while it has requests from this run in flight it is asked every few seconds,
and requests waiting there shrink this run's limit by as many. Elsewhere the latency rule of
``coevol.engine.limits.Backpressure`` finds the size from the answers' queueing delay.

The parsers are pure and refuse anything odd (a hostile or broken server's claim is ignored, never
trusted into a huge or zero limit); ``learn_capacity`` asks each server of a group once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import orjson

from coevol.engine.endpoints import EndpointGroup, Server, capped
from coevol.errors import LLMError

__all__ = ["learn_capacity", "slot_count", "total_slots", "vllm_queue"]

_MAX_SLOTS: Final = 4096  # more than any server runs at once: a larger claim is not believed
# One request ready per this many slots beyond them: a slot that frees starts the next request at
# once instead of idling through the client's turnaround, and the wait it adds is at most a
# fraction of one answer's time.
_SPARE: Final = 4
_ASK_WITHIN: Final = 5.0  # seconds per question; a server that does not answer is not asked again
_WATCH_EVERY: Final = 2.0  # seconds between two looks at a vLLM server's queue
_RUNNING: Final = "vllm:num_requests_running"
_WAITING: Final = "vllm:num_requests_waiting"

Fetch = Callable[..., Awaitable[bytes]]


def _slots(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_SLOTS:
        return value
    return None


def total_slots(raw: bytes) -> int | None:
    """``total_slots`` from llama.cpp server's ``GET /props``; ``None`` if absent or unbelievable."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return _slots(data.get("total_slots")) if isinstance(data, dict) else None


def slot_count(raw: bytes) -> int | None:
    """The number of slots in llama.cpp server's ``GET /slots`` (a list, one object per slot)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
        return None
    return _slots(len(data))


def vllm_queue(text: str) -> tuple[int, int] | None:
    """(running, waiting) summed over vLLM's ``/metrics`` gauges; ``None`` when it is not vLLM's."""
    found = {_RUNNING: 0.0, _WAITING: 0.0}
    seen = False
    for line in text.splitlines():
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name not in found:
            continue
        try:
            value = float(rest.rsplit(" ", 1)[-1])
        except ValueError:
            return None
        if not 0 <= value <= _MAX_SLOTS:
            return None
        found[name] += value
        seen = seen or name == _RUNNING
    return (int(found[_RUNNING]), int(found[_WAITING])) if seen else None


async def _ask(fetch: Fetch) -> int | None:
    for path, parse in (("/props", total_slots), ("/slots", slot_count)):
        try:
            raw = await fetch(path, within=_ASK_WITHIN)
        except LLMError:
            continue  # not such a server, or it refuses: ask the next way
        slots = parse(raw)
        if slots is not None:
            return slots
    return None


async def _vllm(fetch: Fetch) -> bool:
    try:
        text = (await fetch("/metrics", within=_ASK_WITHIN)).decode("utf-8", "replace")
    except LLMError:
        return False
    return vllm_queue(text) is not None


async def _watch(server: Server, fetch: Fetch) -> None:
    """While the run has requests on a vLLM server, shed as many as wait in its queue."""
    while True:
        await asyncio.sleep(_WATCH_EVERY)
        if not server.limit.in_flight:
            continue
        try:
            found = vllm_queue((await fetch("/metrics", within=_WATCH_EVERY)).decode("utf-8", "replace"))
        except LLMError:
            continue
        if found is not None and found[1]:
            server.limit.shed(found[1])


async def learn_capacity(group: EndpointGroup) -> dict[str, int]:
    """Cap each server of ``group`` that reports its slots at about that many requests in flight
    (a quarter more, at least one: see ``_SPARE``); watch the queue of each vLLM server.

    Returns the slots learned, by server (for tests). Servers are asked at once; one that does not
    report (most do not) keeps its limit.
    """
    asked = [
        (server, fetch)
        for server in group.servers
        if capped(server.backend) and (fetch := getattr(server.backend, "fetch_root", None)) is not None
    ]
    found = await asyncio.gather(*(_ask(fetch) for _, fetch in asked))
    learned: dict[str, int] = {}
    unknown = []
    for (server, fetch), slots in zip(asked, found, strict=True):
        if slots is not None:
            server.limit.cap(slots + -(-slots // _SPARE))
            learned[server.name] = slots
        else:
            unknown.append((server, fetch))
    vllm = await asyncio.gather(*(_vllm(fetch) for _, fetch in unknown))
    for (server, fetch), is_vllm in zip(unknown, vllm, strict=True):
        if is_vllm:
            group.watch(_watch(server, fetch))
    return learned
