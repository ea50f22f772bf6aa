"""The async client's connection pool: lanes of one connection each, behind one transport.

httpcore's async pool re-examines every connection it holds, including a
readability check of each idle socket, whenever a request arrives or a
response is closed. With many connections in one pool that work grows with
the square of the load: 64 concurrent requests ran at 0.24x the rate of one
on httpx 0.28 (benchmarks/RESULTS.md). `LaneTransport` is an
`httpx.AsyncBaseTransport` that hands each request a lane, an
`httpx.AsyncHTTPTransport` limited to one connection, so that bookkeeping
stays constant; the SDK's one `httpx.AsyncClient` sends through it, so the
async client has the shape of the sync one. A request takes a free lane (the
most recently used, whose connection is warm), opens a new one while fewer
than `size` exist, or waits its turn in FIFO order for no longer than the pool
timeout.

Connections belong to the event loop that opened them: each loop gets its own
lanes, made as they are first needed, and closed when that loop shuts down
(`asyncio.run` closes them through the async-generator hook) or with the
client. The environment's proxies are read once, by the client, at
construction; proxied requests go through lanes of their own. The TLS
context is made once per trust store and shared.

Delete this module when the pool no longer degrades: once httpcore's async
pool fix is released, or on moving to httpx2 (whose async pool measured 0.83x
of its one-task rate at 64 tasks, where httpx 0.28 measured 0.24x). The
benchmark that decides is the `async` section of `benchmarks/run.py`: the SDK
over a caller's own `httpx.AsyncClient` (one httpcore pool) against the SDK
on its lanes, at 64 tasks.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["LaneClient", "LaneTransport", "Lanes"]

_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


_TLS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _tls_key() -> tuple[str | None, str | None]:
    return os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")


def tls_ready() -> bool:
    """True when `tls_context()` would not block: made already for this environment."""
    return _tls_key() in _TLS


def tls_context() -> ssl.SSLContext:
    """The TLS context every lane shares: httpx's default, made once per trust store.

    Loading the trust store takes tens of milliseconds; the context depends on
    nothing but SSL_CERT_FILE / SSL_CERT_DIR, so one is made per value of those.
    """
    key = _tls_key()
    context = _TLS.get(key)
    if context is None:
        context = _TLS[key] = httpx.create_ssl_context()
        # The first transport made costs ~20 ms more than the next ones (httpcore's
        # lazy setup): pay that here too, not on the event loop.
        httpx.AsyncHTTPTransport(verify=context, limits=_ONE_CONNECTION)
    return context


def _expire(waiter: asyncio.Future[httpx.AsyncBaseTransport | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Lanes:
    """The lanes of one event loop: at most `size` requests in flight, each on its own lane."""

    def __init__(self, size: int, make: Callable[[], httpx.AsyncBaseTransport]) -> None:
        self.size = size
        self._make = make
        self.made: list[httpx.AsyncBaseTransport] = []
        self._free: list[httpx.AsyncBaseTransport] = []  # popped from the end: warmest first
        self._waiters: deque[asyncio.Future[httpx.AsyncBaseTransport | None]] = deque()
        self.closed = False
        self.watch: AsyncGenerator[None, None] | None = None

    async def take(self, within: float | None) -> httpx.AsyncBaseTransport | None:
        """A lane to send one request on, or None if none came free `within` seconds.

        The caller must `give` the lane back once the response is closed.
        """
        if self._free:
            free: httpx.AsyncBaseTransport = self._free.pop()
            return free
        if len(self.made) < self.size:
            lane = self._make()
            self.made.append(lane)
            return lane
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[httpx.AsyncBaseTransport | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if within is None else loop.call_later(max(0.0, within), _expire, waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            handed = None if waiter.cancelled() else waiter.result()
            if handed is None:
                self._forget(waiter)
            else:  # cancelled just after a lane was handed over: pass it on
                self.give(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if handed is None:
            self._forget(waiter)
        return handed

    def _forget(self, waiter: asyncio.Future[httpx.AsyncBaseTransport | None]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def give(self, lane: httpx.AsyncBaseTransport) -> None:
        """Return a lane taken with `take`: to the first waiter, else to the free list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)

    async def aclose(self) -> None:
        """Close every lane (all of them, even if one fails)."""
        self.closed = True
        failure: BaseException | None = None
        for lane in self.made:
            try:
                await lane.aclose()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


async def _closed_with_the_loop(lanes: Lanes) -> AsyncGenerator[None, None]:
    # An async generator left open: `asyncio.run` (loop.shutdown_asyncgens)
    # closes it while the loop still runs, and with it the loop's connections.
    try:
        yield
    finally:
        await lanes.aclose()


class _Returning(httpx.AsyncByteStream):
    """A lane's response body that gives the lane back once it is closed."""

    __slots__ = ("_lane", "_lanes", "_stream")

    def __init__(self, stream: Any, lanes: Lanes, lane: httpx.AsyncBaseTransport) -> None:
        self._stream, self._lanes = stream, lanes
        self._lane: httpx.AsyncBaseTransport | None = lane

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        lane, self._lane = self._lane, None
        try:
            await self._stream.aclose()
        finally:
            if lane is not None:
                self._lanes.give(lane)


def _wait_limit(request: httpx.Request) -> float | None:
    """How long a request may wait for a lane: the pool timeout, else its connect + read."""
    timeout = request.extensions.get("timeout", {})
    if timeout.get("pool") is not None:
        return float(timeout["pool"])
    if timeout.get("connect") is not None and timeout.get("read") is not None:
        return float(timeout["connect"] + timeout["read"])
    return None


class LaneTransport(httpx.AsyncBaseTransport):
    """Sends each request on a lane of the running event loop (see the module docstring).

    Args:
        size: Lanes per event loop: requests in flight at once.
        proxy: The proxy every lane sends through, if any.
    """

    def __init__(self, size: int, proxy: httpx.Proxy | None = None) -> None:
        self.size = size
        self._proxy = proxy
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: Lanes | None = None
        self._by_loop: dict[asyncio.AbstractEventLoop, Lanes] = {}
        self._closed = False

    def prepare(self) -> None:
        """Do the slow, blocking part of making lanes (the TLS context); safe in a thread."""
        if self._tls is None:
            self._tls = tls_context()

    @property
    def prepared(self) -> bool:
        return self._tls is not None

    def _lane(self) -> httpx.AsyncHTTPTransport:
        if self._tls is None:
            self.prepare()
        tls: ssl.SSLContext = self._tls  # type: ignore[assignment]
        return httpx.AsyncHTTPTransport(verify=tls, limits=_ONE_CONNECTION, proxy=self._proxy)

    async def _lanes_of_this_loop(self) -> Lanes:
        loop = asyncio.get_running_loop()
        if loop is self._loop and self._lanes is not None:
            return self._lanes
        lanes = self._by_loop.get(loop)
        if lanes is None:
            # A new loop: forget the lanes of loops that are gone (closed with them).
            for old in [old for old in self._by_loop if old.is_closed()]:
                del self._by_loop[old]
            lanes = self._by_loop[loop] = Lanes(self.size, self._lane)
            lanes.watch = _closed_with_the_loop(lanes)
            await lanes.watch.__anext__()
        self._loop, self._lanes = loop, lanes
        return lanes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        lanes = await self._lanes_of_this_loop()
        lane = await lanes.take(_wait_limit(request))
        if lane is None:
            # Nothing was sent: a definite failure, safe to retry.
            raise httpx.PoolTimeout(
                "no free connection slot within the pool timeout", request=request
            )
        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            lanes.give(lane)
            raise
        response.stream = _Returning(response.stream, lanes, lane)
        return response

    async def aclose(self) -> None:
        """Close the lanes of this loop; those of loops already closed went with them."""
        self._closed = True
        loop = asyncio.get_running_loop()
        lanes, self._by_loop = self._by_loop.get(loop), {}
        self._loop = self._lanes = None
        if lanes is not None and lanes.watch is not None:
            await lanes.watch.aclose()


class LaneClient(httpx.AsyncClient):
    """The SDK's own `httpx.AsyncClient`: every request on lanes, proxied ones too.

    httpx reads the environment's proxies once, here, and asks for one
    transport per route: each is a `LaneTransport`.
    """

    def __init__(self, *, size: int, timeout: httpx.Timeout) -> None:
        self._size = size
        super().__init__(timeout=timeout, follow_redirects=False)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return LaneTransport(self._size)

    def _init_proxy_transport(
        self, proxy: httpx.Proxy, *args: Any, **kwargs: Any
    ) -> httpx.AsyncBaseTransport:
        return LaneTransport(self._size, proxy)

    def lane_transports(self) -> list[LaneTransport]:
        """Every lane transport of this client: the direct one, then one per proxy."""
        found = [self._transport, *self._mounts.values()]
        return [t for t in found if isinstance(t, LaneTransport)]

    def prepare(self) -> None:
        """Build what lanes need before the first request (blocking: run it in a thread)."""
        for transport in self.lane_transports():
            transport.prepare()

    def ready(self) -> bool:
        """True when `prepare()` would not block."""
        return tls_ready() or all(t.prepared for t in self.lane_transports())

    async def aclose(self) -> None:
        await super().aclose()  # closes the transport and every proxy mount
