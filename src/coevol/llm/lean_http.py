"""The lean transport: HTTP/1.1 keep-alive on asyncio protocols, for plain-http servers.

Where the client's CPU goes: aiohttp's general request path (its request and response objects,
header multidicts, stream readers, tracing hooks) and the asyncio tasks around it cost about as
much as all of coevol's own work per call. A local vLLM or llama.cpp server needs none of it: one
POST with a JSON body on a kept-alive connection, one answer framed by ``Content-Length`` or
chunked. This transport writes the request in one ``write`` from a request head built once per
URL, and parses the answer with httptools (the C parser llhttp, as uvicorn uses), straight in the
protocol's callbacks, with one future and one timer per exchange.

What it keeps from a full client: chunked and ``Content-Length`` bodies (and an EOF-delimited one),
gzip/deflate from a server that compresses although asked not to, the answer size cap (reading
stops past ``max_answer_bytes``, inflated size counted), every timeout of ``coevol.llm.timeouts``,
connection loss midway reported as such, and a bounded pool. A pooled connection is reused only
after a complete answer the server allowed to keep alive, and only while fresh (``KEEPALIVE_EXPIRY``:
vLLM's and llama.cpp's servers close idle connections after 5 s); one the server closed while idle
is dropped before anything is sent on it. Once a request is written it is never re-sent here: a
server may be working on it (the caller decides on retries). Redirects are never followed (the
backend reports a 3xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Mapping
from typing import Final

import httptools
from yarl import URL

from coevol.llm.timeouts import Clock, Timeouts
from coevol.llm.transport import MAX_ERROR_BODY, Answer, Broken, Stalled, TooLarge

__all__ = ["KEEPALIVE_EXPIRY", "LeanTransport"]

KEEPALIVE_EXPIRY: Final = 3.0  # seconds an idle pooled connection is trusted to still be open
_DECODERS: Final = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_NO_BODY: Final = frozenset({204, 304})


class _Stop(Exception):
    """Raised from a parser callback to stop parsing once the exchange has been decided."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection and the state of the exchange on it (one at a time).

    The parser's callbacks fill the answer; the exchange ends in ``_finish`` (a complete answer)
    or ``_fail`` (which also closes the connection), each resolving the waiter once.
    """

    __slots__ = (
        "_cap",
        "_chunked",
        "_chunks",
        "_clock",
        "_decoder",
        "_got_bytes",
        "_header",
        "_last",
        "_length",
        "_limit",
        "_loop",
        "_parser",
        "_size",
        "_status",
        "_timer",
        "_until_eof",
        "_waiter",
        "closed",
        "generation",
        "idle_since",
        "reusable",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int, generation: int) -> None:
        self._loop = loop
        self._cap = cap
        self.generation = generation
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._clock: Clock | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        """Forget the answer so far (a new exchange, or the real answer after a 1xx)."""
        self._status = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = self._cap
        self._header: str | None = None
        self._decoder: zlib._Decompress | None = None
        self._length: int | None = None
        self._chunked = False
        self._until_eof = False

    def usable(self, now: float) -> bool:
        """Whether this idle connection may carry a request: open, and idle only briefly."""
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < KEEPALIVE_EXPIRY
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, clock: Clock) -> asyncio.Future[Answer]:
        """Write one request; the future resolves with its answer or a transport exception."""
        self._reset()
        self._got_bytes = False
        self.reusable = False
        self._clock = clock
        waiter = self._waiter = self._loop.create_future()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():  # closed as soon as opened
            self._fail(Broken("the server closed the connection without answering"))
            return waiter
        self._arm(clock.at("first_byte", self._loop.time()))
        transport.write(data)
        return waiter

    def abandon(self) -> None:
        """The caller gave up (cancelled): the answer may still be on its way, so close."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
        self._waiter = None
        self._disarm()
        self.close()

    # --- deadlines ----------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        """A deadline passed. Mid-answer, progress since it was set moves it on (one timer per
        exchange, not one per read); otherwise the phase it belonged to has timed out."""
        self._timer = None
        clock = self._clock
        if clock is None or self._waiter is None or self._waiter.done():
            return
        if self._got_bytes:
            due = clock.at("idle", self._last)
            if due > self._loop.time():
                self._timer = self._loop.call_at(due, self._on_timer)
                return
        self._fail(Stalled(clock.phase, clock.seconds(clock.phase)))

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._last = self._loop.time()
        if not self._got_bytes:
            self._got_bytes = True
            self._arm(self._clock.at("idle", self._last))  # type: ignore[union-attr]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._waiter is not None:  # a callback failed without deciding: a bug, not the server
                raise
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        self._lost()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._until_eof and self._status:  # neither length nor chunks: the body ends here
            self._finish()
        elif self._got_bytes:
            self._fail(Broken("the connection closed midway through the answer"))
        else:
            self._fail(Broken("the server closed the connection without answering"))

    # --- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length":
            self._length = int(value) if value.strip().isdigit() else None
        elif key == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
        elif key == b"content-encoding":
            coding = value.strip().lower()
            if coding in _DECODERS:
                self._decoder = zlib.decompressobj(_DECODERS[coding])
            elif coding != b"identity":
                self._fail(Broken(f"the answer uses an unsupported Content-Encoding {value[:40]!r}"))
                raise _Stop
        elif key == b"retry-after" or key == b"location":
            self._header = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._status = self._parser.get_status_code()
        if status >= 300:
            self._limit = MAX_ERROR_BODY  # an error body is only read for its message
        elif self._length is not None and self._length > self._limit:
            self._fail(TooLarge())  # the declared length is enough: not one byte of it is read
            raise _Stop
        self._until_eof = (
            not self._chunked and self._length is None and status >= 200 and status not in _NO_BODY
        )

    def on_body(self, body: bytes) -> None:
        decoder = self._decoder
        if decoder is not None:
            body = decoder.decompress(body, self._limit - self._size + 1)
            if decoder.unconsumed_tail:  # it inflates past the limit
                self._add(body)
                self._over_limit()
        self._add(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        if self._decoder is not None:
            try:
                self._add(self._decoder.flush())
            except zlib.error as exc:
                self._fail(Broken(f"the compressed answer is corrupt: {exc}"))
                raise _Stop from None
        self.reusable = self._parser.should_keep_alive()
        self._finish()

    def _add(self, body: bytes) -> None:
        if not body:
            return
        self._size += len(body)
        over = self._size > self._limit
        if over:
            body = body[: len(body) - (self._size - self._limit)]
        self._chunks.append(body)
        if over:
            self._over_limit()

    def _over_limit(self) -> None:
        """Past the cap: a success answer fails; an error answer keeps its head for the message."""
        if self._status < 300:
            self._fail(TooLarge())
        else:
            self._finish()
            self.close()
        raise _Stop

    # --- the end of an exchange ---------------------------------------------------------------

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._disarm()
        if waiter is None or waiter.done():
            return
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        header = self._header if self._status == 429 or 300 <= self._status < 400 else None
        waiter.set_result(Answer(self._status, body, header))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._disarm()
        self.reusable = False
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class LeanTransport:
    """``Transport`` for one ``http://`` host: at most ``max_connections`` kept-alive connections.

    Bound to the event loop it is first used in; used from another loop, it starts a fresh pool.
    A request waits for a free connection when all are busy (the engine's in-flight limit keeps
    that rare); that wait counts against the total cap only, never against the server.
    """

    __slots__ = (
        "_cap",
        "_generation",
        "_headers",
        "_heads",
        "_host",
        "_idle",
        "_loop",
        "_max",
        "_open",
        "_port",
        "_waiters",
    )

    def __init__(
        self, url: URL, headers: Mapping[str, str], *, max_connections: int, max_answer_bytes: int
    ) -> None:
        """``headers`` are sent verbatim: the caller has refused line breaks in them."""
        if url.scheme != "http" or not url.raw_host:
            raise ValueError("the lean transport speaks plain http to one host")
        self._host = url.raw_host
        self._port = url.port or 80
        merged = {"user-agent": ("User-Agent", "coevol"), "accept-encoding": ("Accept-Encoding", "identity")}
        merged.update({name.lower(): (name, value) for name, value in headers.items()})
        for framing in ("host", "content-length", "transfer-encoding", "connection"):
            merged.pop(framing, None)  # the transport's to set: one host, a length, keep-alive
        lines = [f"Host: {url.host_port_subcomponent}", *(f"{n}: {v}" for n, v in merged.values())]
        self._headers = "".join(f"{line}\r\n" for line in lines)
        self._heads: dict[tuple[str, URL], bytes] = {}
        self._max = max_connections
        self._cap = max_answer_bytes
        self._idle: list[_Connection] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._open = 0
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self._forget()

    def _forget(self) -> None:
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(RuntimeError):  # from a loop that is closed now
                conn.close()
        self._open = 0
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = []

    def _head(self, method: str, url: URL) -> bytes:
        """The request line and headers up to the body's length, built once per URL."""
        head = self._heads.get((method, url))
        if head is None:
            head = f"{method} {url.raw_path_qs} HTTP/1.1\r\n{self._headers}".encode("latin-1")
            self._heads[(method, url)] = head
        return head

    async def exchange(self, method: str, url: URL, body: bytes | None, timeouts: Timeouts) -> Answer:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._forget()
            self._loop = loop
        clock = Clock(timeouts, loop.time())
        conn = await self._acquire(loop, clock)
        head = self._head(method, url)
        length = b"" if body is None else b"Content-Length: %d\r\n" % len(body)
        data = b"".join((head, length, b"\r\n", body or b""))
        waiter = conn.send(data, clock)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.abandon()
            raise
        finally:
            self._release(conn, loop)

    async def _acquire(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> _Connection:
        """A fresh idle connection (most recently used first), a new one, or the next one freed."""
        while True:
            now = loop.time()
            while self._idle:
                conn = self._idle.pop()
                if conn.usable(now):
                    return conn
                conn.close()  # closed by the server while idle, or too old to trust: nothing sent
                self._open -= 1
            if self._open < self._max:
                self._open += 1
                try:
                    return await self._connect(loop, clock)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(clock.at("total", now)):
                    await waiter
            except TimeoutError:
                raise Stalled("total", clock.seconds("total")) from None
            except BaseException:
                self._wake()  # a wake-up meant for this request goes to the next one
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> _Connection:
        generation = self._generation
        try:
            async with asyncio.timeout_at(clock.at("connect", loop.time())):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._cap, generation), self._host, self._port
                )
        except TimeoutError:
            raise Stalled(clock.phase, clock.seconds(clock.phase)) from None
        except OSError as exc:
            raise Broken(f"{type(exc).__name__}: {exc}") from None
        return conn

    def _release(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        if conn.generation != self._generation:  # from before aclose(): not ours to count
            conn.close()
            return
        if conn.reusable and not conn.closed:
            conn.idle_since = loop.time()
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return
