"""Async requests spread over httpx clients of one connection each ("lanes").

httpcore's async pool re-examines every connection it holds, including a
readability check of each idle socket, whenever a request arrives or a response
is closed. With many connections in one pool that work grows with the square of
the load, and 64 concurrent requests ran at under half the rate of one
(benchmarks/RESULTS.md). A lane is an `httpx.AsyncClient` limited to one
connection, so that bookkeeping stays constant; a request takes a free lane
(the most recently used, whose connection is warm), or a new one up to the
limit, or waits its turn in FIFO order for no longer than it is allowed to.

A client the caller passes in is not split: it becomes `size` lanes that are
all that client, which caps the requests it has in flight.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import httpx

__all__ = ["MAX_CONNECTIONS", "MAX_IN_FLIGHT_SHARED", "Lanes", "owned_lanes"]

#: Connections (so requests in flight) of one AsyncKNAIProvider's own pool.
MAX_CONNECTIONS = 32
#: Requests in flight through a caller's own `httpx.AsyncClient`, whose one
#: pool slows as it holds more.
MAX_IN_FLIGHT_SHARED = 8
_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def _expire(waiter: asyncio.Future[httpx.AsyncClient | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Lanes:
    """At most `size` requests in flight, each on a lane of its own.

    Args:
        first: The first lane, made at once (its headers are the template).
        size: How many lanes there may be.
        make: Makes another lane when all are busy; None to reuse `first`
            for every lane (a caller's own client, which the SDK does not own).
    """

    def __init__(
        self,
        first: httpx.AsyncClient,
        size: int,
        make: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.first = first
        self.size = size
        self._make = make
        #: The clients this object made and must close (empty when not owned).
        self.clients: list[httpx.AsyncClient] = [first] if make is not None else []
        self._free: list[httpx.AsyncClient] = [first] if make is not None else [first] * size
        self._made = 1 if make is not None else size
        self._waiters: deque[asyncio.Future[httpx.AsyncClient | None]] = deque()
        self._closed = False

    async def take(self, within: float) -> httpx.AsyncClient | None:
        """A lane to send one request on, or None if none came free `within` seconds.

        The caller must `give` the lane back once the response is closed.
        """
        if self._free:
            return self._free.pop()
        if self._made < self.size and self._make is not None and not self._closed:
            self._made += 1
            lane = self._make()
            self.clients.append(lane)
            return lane
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[httpx.AsyncClient | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(max(0.0, within), _expire, waiter)
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
            timer.cancel()
        if handed is None:
            self._forget(waiter)
        return handed

    def _forget(self, waiter: asyncio.Future[httpx.AsyncClient | None]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def give(self, lane: httpx.AsyncClient) -> None:
        """Return a lane taken with `take`: to the first waiter, else to the free list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)

    async def aclose(self) -> None:
        """Close every lane this object made; later requests fail as on a closed client."""
        self._closed = True
        for lane in self.clients:
            await lane.aclose()


def owned_lanes(timeout: httpx.Timeout, size: int = MAX_CONNECTIONS) -> Lanes:
    """Lanes made by the SDK: `size` clients of one connection, one TLS context between them."""
    # Made once, as each client would make it (trust store, SSL_CERT_FILE/DIR).
    tls = httpx.create_ssl_context()

    def make() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, limits=_ONE_CONNECTION, verify=tls
        )

    return Lanes(make(), size, make)
