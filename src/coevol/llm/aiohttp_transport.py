"""The aiohttp transport: TLS (``https://`` servers), proxies, and the fallback a user can choose.

One pooled ``ClientSession``, created lazily in the loop that first uses it. Redirects are never
followed. Timeouts are on progress (``coevol.llm.timeouts``): aiohttp bounds the connect; one
``asyncio.timeout_at`` per exchange, moved forward on every read, bounds the first byte and the
silences between reads, never past the exchange's total cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from coevol.llm.timeouts import Clock, Timeouts
from coevol.llm.transport import MAX_ERROR_BODY, Answer, Broken, Stalled, TooLarge

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """``Transport`` over one ``aiohttp.ClientSession``."""

    __slots__ = ("_connect", "_headers", "_max_answer_bytes", "_max_connections", "_proxied", "_session")

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        max_answer_bytes: int,
        connect_timeout: float,
        proxied: bool = False,
    ) -> None:
        """``proxied``: the environment names a proxy for the server, so it is read (``trust_env``);
        otherwise it is not, since aiohttp would read the environment and ``~/.netrc`` per request."""
        self._headers = dict(headers)
        self._proxied = proxied
        self._max_connections = max_connections
        self._max_answer_bytes = max_answer_bytes
        self._connect = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect),
            raise_for_status=False,
            trust_env=self._proxied,
        )
        return self._session

    async def exchange(self, method: str, url: URL, body: bytes | None, timeouts: Timeouts) -> Answer:
        session = self._session or self._open()
        loop = asyncio.get_running_loop()
        clock = Clock(timeouts, loop.time())
        kwargs: dict[str, Any] = {}
        if timeouts.connect != self._connect:  # a probe with shorter limits
            kwargs["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect)
        try:
            async with asyncio.timeout_at(clock.at("first_byte", loop.time())) as timer:
                # Redirects are not followed: the Authorization header (and a key in the query
                # string) must not travel to a host the configuration never named.
                async with session.request(method, url, data=body, allow_redirects=False, **kwargs) as resp:
                    status = resp.status
                    timer.reschedule(clock.at("idle", loop.time()))
                    if status < 300:
                        return Answer(status, await self._read(resp, timer, clock, loop), None)
                    raw = await resp.content.read(MAX_ERROR_BODY)
                    return Answer(
                        status, raw, resp.headers.get("Retry-After" if status == 429 else "Location")
                    )
        except aiohttp.ConnectionTimeoutError:  # before TimeoutError: it is one
            raise Stalled("connect", clock.seconds("connect")) from None
        except TimeoutError:
            raise Stalled(clock.phase, clock.seconds(clock.phase)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Broken(f"{type(exc).__name__}: {exc}") from None

    async def _read(
        self,
        resp: aiohttp.ClientResponse,
        timer: asyncio.Timeout,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
    ) -> bytes:
        """The body, never more than ``max_answer_bytes`` of it (after decoding: a small compressed
        body may inflate), each read within the idle timeout."""
        cap = self._max_answer_bytes
        length = resp.content_length
        if length is not None and length > cap:
            raise TooLarge
        chunks: list[bytes] = []
        size = 0
        content = resp.content
        while chunk := await content.readany():
            size += len(chunk)
            if size > cap:
                raise TooLarge
            chunks.append(chunk)
            timer.reschedule(clock.at("idle", loop.time()))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
