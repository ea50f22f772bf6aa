"""Async requests spread over httpx clients of one connection each ("lanes").

httpcore's async pool re-examines every connection it holds, including a
readability check of each idle socket, whenever a request arrives or a response
is closed. With many connections in one pool that work grows with the square of
the load, and 64 concurrent requests ran at under half the rate of one
(benchmarks/RESULTS.md). A lane is an `httpx.AsyncClient` limited to one
connection, so that bookkeeping stays constant. A request takes a free lane
(the most recently used, whose connection is warm) or waits its turn in FIFO
order for no longer than it is allowed to.

The lanes are all made with the provider, as one httpx client would be: they
read the environment (proxies, SSL_CERT_FILE) once, at the same moment, and a
bad setting fails at construction (100 lanes take about 6 ms and 250 KiB). A
lane opens its connection only when it is first used. A client the caller
passes in is used as it is, under its own pool limits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

import httpx

__all__ = ["Lanes", "owned_lanes"]

_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)
_CLOSED = "Cannot send a request, as the client has been closed."


def _expire(waiter: asyncio.Future[httpx.AsyncClient | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Lanes:
    """At most `len(lanes)` requests in flight, each on a lane of its own.

    Args:
        lanes: The lanes, which `aclose` closes.
    """

    def __init__(self, lanes: Sequence[httpx.AsyncClient]) -> None:
        if not lanes:
            raise ValueError("lanes must not be empty")
        self.first = lanes[0]
        self.clients = list(lanes)
        self._free = list(reversed(lanes))  # popped from the end: the first lane first
        self._waiters: deque[asyncio.Future[httpx.AsyncClient | None]] = deque()
        self._closed = False

    async def take(self, within: float) -> httpx.AsyncClient | None:
        """A lane to send one request on, or None if none came free `within` seconds.

        The caller must `give` the lane back once the response is closed.
        Raises RuntimeError once closed.
        """
        if self._closed:
            raise RuntimeError(_CLOSED)
        if self._free:
            return self._free.pop()
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
        """Refuse new requests; close every lane (all of them, even if one fails)."""
        self._closed = True
        failure: BaseException | None = None
        for lane in self.clients:
            try:
                await lane.aclose()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def owned_lanes(timeout: httpx.Timeout, size: int) -> Lanes:
    """`size` lanes made by the SDK, sharing one TLS context."""
    # Made once, as each client would make it (trust store, SSL_CERT_FILE/DIR).
    tls = httpx.create_ssl_context()
    lanes = [
        httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, limits=_ONE_CONNECTION, verify=tls
        )
        for _ in range(size)
    ]
    return Lanes(lanes)
