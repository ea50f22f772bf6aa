"""The async client's connection lanes: one connection per lane, a cap, a fair queue.

Unit tests drive `Lanes` directly; the rest run `AsyncKNAIProvider` against a
loopback server that holds every request until released, so what is on the
wire at once is counted on the server's side.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from knai import APITimeoutError, AsyncKNAIProvider, KNAIProvider
from knai._constants import DEFAULT_MAX_CONNECTIONS
from knai._lanes import Lanes
from knai.testing.pytest_plugin import quick_retries
from tests.conftest import API_KEY, SLUG, TOKEN
from tests.support.rogue import Action, Reply, RogueServer
from tests.support.twin import CHARGED, Twin

pytestmark = pytest.mark.anyio

LIMIT = 8  # max_connections of the providers below, unless a test says otherwise


def lanes(size: int) -> Lanes:
    """Lanes over mock transports, made as they are first taken (nothing is sent)."""
    return Lanes(size, lambda: httpx.MockTransport(lambda r: httpx.Response(200)))


# -- Lanes on its own ---------------------------------------------------------------------------


async def test_lanes_are_taken_in_order_and_never_more_than_there_are() -> None:
    pool = lanes(3)
    assert pool.made == []  # none is made before it is needed
    taken = [await pool.take(1.0) for _ in range(3)]
    assert taken == pool.made  # each made as needed; three distinct lanes
    assert len(set(map(id, taken))) == 3
    assert await pool.take(0.01) is None  # a fourth must wait; here it times out
    await pool.aclose()


async def test_the_most_recently_freed_lane_is_taken_first() -> None:
    pool = lanes(3)
    a, b = await pool.take(1.0), await pool.take(1.0)
    assert a is not None
    assert b is not None
    pool.give(a)
    pool.give(b)
    assert await pool.take(1.0) is b  # its connection is the warmest
    await pool.aclose()


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = lanes(1)
    held = await pool.take(1.0)
    assert held is not None
    order: list[int] = []

    async def wait(n: int) -> None:
        lane = await pool.take(5.0)
        assert lane is held
        order.append(n)
        pool.give(lane)

    waiting = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0.01)  # all five queue up
    pool.give(held)
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4]
    await pool.aclose()


async def test_a_wait_that_times_out_returns_none_and_leaves_no_waiter_behind() -> None:
    pool = lanes(1)
    held = await pool.take(1.0)
    assert held is not None
    started = time.monotonic()
    assert await pool.take(0.05) is None
    assert 0.04 <= time.monotonic() - started < 1.0
    pool.give(held)
    assert await pool.take(0.0) is held  # freed to the list, not to the gone waiter
    await pool.aclose()


async def test_a_cancelled_waiter_loses_no_lane() -> None:
    pool = lanes(1)
    held = await pool.take(1.0)
    assert held is not None
    waiter = asyncio.create_task(pool.take(5.0))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    pool.give(held)
    assert await pool.take(0.0) is held
    await pool.aclose()


async def test_a_waiter_cancelled_just_after_being_handed_a_lane_passes_it_on() -> None:
    pool = lanes(1)
    held = await pool.take(1.0)
    assert held is not None
    first = asyncio.create_task(pool.take(5.0))
    second = asyncio.create_task(pool.take(5.0))
    await asyncio.sleep(0.01)
    pool.give(held)  # handed to `first`, which has not run yet...
    first.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1.0) is held
    await pool.aclose()


async def test_closing_closes_every_lane_even_if_one_fails() -> None:
    pool = lanes(3)
    made = [await pool.take(1.0) for _ in range(3)]
    closed: list[int] = []

    def closer(n: int) -> Any:
        async def aclose() -> None:
            closed.append(n)
            if n == 1:
                raise OSError("close failed")

        return aclose

    for n, lane in enumerate(made):
        lane.aclose = closer(n)  # type: ignore[method-assign,union-attr]
    with pytest.raises(OSError, match="close failed"):
        await pool.aclose()
    assert closed == [0, 1, 2]


# -- over loopback ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held(Action):
    """Answer only once `release` is set (or after 10 s)."""

    release: threading.Event
    answer: Reply

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        self.release.wait(10.0)
        return self.answer.perform(conn, server)


@pytest.fixture
def held() -> Iterator[tuple[RogueServer, threading.Event]]:
    release = threading.Event()
    with RogueServer(Held(release, Reply(200, CHARGED))) as server:
        yield server, release
        release.set()


async def crowd(provider: AsyncKNAIProvider, n: int) -> list[Any]:
    return await asyncio.gather(
        *(provider.charge(TOKEN, 1500, "gpt-4") for _ in range(n)), return_exceptions=True
    )


async def on_the_wire(server: RogueServer, expected: int) -> int:
    """Requests the server holds once the count settles at `expected` (or 3 s pass)."""
    await asyncio.to_thread(server.wait_until, lambda: server.count >= expected)
    await asyncio.sleep(0.1)  # would anything more arrive?
    return server.count


@pytest.mark.parametrize("max_connections", [None, 8])
async def test_the_sdks_own_pool_opens_at_most_max_connections_and_reuses_them(
    held: tuple[RogueServer, threading.Event], max_connections: int | None
) -> None:
    server, release = held
    limit = max_connections or DEFAULT_MAX_CONNECTIONS
    n = limit + 8
    async with AsyncKNAIProvider(
        API_KEY, SLUG, server.url, max_connections=max_connections
    ) as provider:
        everyone = asyncio.ensure_future(crowd(provider, n))
        assert await on_the_wire(server, limit) == limit
        release.set()
        results = await everyone
        assert [r.charge_id for r in results] == ["ch_1"] * n
        assert server.count == n
        assert server.connections == limit  # the last 8 went over warm lanes
        # A second burst opens nothing new.
        assert len(await crowd(provider, n)) == n
        assert server.connections == limit
        # The idempotency keys stayed one per charge.
        assert len(set(server.header_values("Idempotency-Key"))) == 2 * n
    # Leaving the block closed every connection.
    assert await asyncio.to_thread(server.wait_until, lambda: server.open_connections == 0)


async def test_the_sync_clients_pool_opens_at_most_max_connections(
    held: tuple[RogueServer, threading.Event],
) -> None:
    server, release = held
    with (
        KNAIProvider(API_KEY, SLUG, server.url, max_connections=4) as provider,
        ThreadPoolExecutor(8) as threads,
    ):
        charges = [threads.submit(provider.charge, TOKEN, 1500, "gpt-4") for _ in range(8)]
        assert await on_the_wire(server, 4) == 4
        release.set()
        assert [c.result(5).charge_id for c in charges] == ["ch_1"] * 8
    assert server.connections == 4  # kept alive and reused, not reopened


@pytest.mark.parametrize(("limits", "at_once"), [(None, 20), (httpx.Limits(max_connections=3), 3)])
async def test_a_callers_own_client_is_used_as_it_is_under_its_own_limits(
    held: tuple[RogueServer, threading.Event], limits: httpx.Limits | None, at_once: int
) -> None:
    server, release = held
    async with httpx.AsyncClient(**({} if limits is None else {"limits": limits})) as mine:
        provider = AsyncKNAIProvider(API_KEY, SLUG, server.url, http_client=mine)
        everyone = asyncio.ensure_future(crowd(provider, 20))
        assert await on_the_wire(server, at_once) == at_once
        release.set()
        assert [r.charge_id for r in await everyone] == ["ch_1"] * 20
        await provider.aclose()
        assert not mine.is_closed


@pytest.mark.parametrize(("max_retries", "at_least"), [(0, 0.08), (2, 0.25)])
async def test_each_attempt_waits_for_a_lane_within_the_pool_timeout_and_sends_nothing(
    held: tuple[RogueServer, threading.Event], max_retries: int, at_least: float
) -> None:
    server, release = held
    async with AsyncKNAIProvider(API_KEY, SLUG, server.url, max_connections=LIMIT) as provider:
        quick_retries(provider)
        everyone = asyncio.ensure_future(crowd(provider, LIMIT))
        assert await on_the_wire(server, LIMIT) == LIMIT
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as caught:
            await provider.charge(
                TOKEN, 1500, "gpt-4", timeout=httpx.Timeout(5.0, pool=0.1), max_retries=max_retries
            )
        # One wait of 0.1 s per attempt (and short pauses): nothing was sent, so retrying is safe.
        assert at_least < time.monotonic() - started < 2.0
        assert caught.value.attempts == max_retries + 1
        assert caught.value.may_have_been_applied is False
        assert "no free connection" in str(caught.value)
        assert server.count == LIMIT  # nothing more reached the server
        release.set()
        assert len(await everyone) == LIMIT


async def test_cancelling_charges_that_wait_for_a_lane_frees_nothing_twice(
    held: tuple[RogueServer, threading.Event],
) -> None:
    server, release = held
    async with AsyncKNAIProvider(API_KEY, SLUG, server.url, max_connections=LIMIT) as provider:
        busy = asyncio.ensure_future(crowd(provider, LIMIT))
        assert await on_the_wire(server, LIMIT) == LIMIT
        queued = [asyncio.ensure_future(provider.charge(TOKEN, 1, "gpt-4")) for _ in range(5)]
        await asyncio.sleep(0.02)
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        release.set()
        await busy
        # Every lane came back: a full crowd again runs at once on the same connections.
        release.clear()
        again = asyncio.ensure_future(crowd(provider, LIMIT))
        assert await on_the_wire(server, 2 * LIMIT) == 2 * LIMIT
        release.set()
        await again
        assert server.connections == LIMIT


@pytest.mark.parametrize("cls", [KNAIProvider, AsyncKNAIProvider])
async def test_every_connection_uses_a_proxy_from_the_environment_as_httpx_does(
    cls: type[KNAIProvider | AsyncKNAIProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    release = threading.Event()
    release.set()  # answers at once; concurrent async charges still overlap on the wire
    with RogueServer(Held(release, Reply(200, CHARGED))) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        twin = Twin(cls(API_KEY, SLUG, "http://127.0.0.1:9"))  # nothing listens on port 9
        results = await asyncio.gather(*(twin.charge(TOKEN, 1500, "gpt-4") for _ in range(6)))
        await twin.close()
    assert [r.charge_id for r in results] == ["ch_1"] * 6
    assert [r.target for r in proxy.requests] == ["http://127.0.0.1:9/charge/authorize"] * 6
    if isinstance(twin.provider, AsyncKNAIProvider):
        assert proxy.connections == 6  # six lanes, each through the proxy


@pytest.mark.parametrize("proxied_at_construction", [False, True])
async def test_every_lane_keeps_the_proxy_settings_the_client_was_made_with(
    proxied_at_construction: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with RogueServer(Reply(200, CHARGED)) as server, RogueServer(Reply(200, CHARGED)) as proxy:
        if proxied_at_construction:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
        provider = AsyncKNAIProvider(API_KEY, SLUG, server.url, max_retries=0)
        # The environment changes after construction: what a plain
        # httpx.AsyncClient made now would ignore.
        if proxied_at_construction:
            monkeypatch.delenv("HTTP_PROXY")
        else:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
        results = await crowd(provider, 6)  # concurrent: opens more lanes
        await provider.aclose()
    assert [r.charge_id for r in results] == ["ch_1"] * 6
    if proxied_at_construction:
        assert (proxy.count, server.count) == (6, 0)  # none bypass the proxy
        assert proxy.connections == 6  # six lanes
    else:
        assert (proxy.count, server.count) == (0, 6)  # none go to a proxy set later
        assert server.connections == 6


# -- event loops (issue 9, item 1) --------------------------------------------------------------


def test_one_async_client_serves_several_event_loops_and_closes_from_a_new_one() -> None:
    """Celery tasks, sync views: each asyncio.run gets connections of its own; none is lost."""
    with RogueServer(Reply(200, CHARGED)) as server:
        provider = AsyncKNAIProvider(API_KEY, SLUG, server.url)

        async def two() -> list[Any]:
            return list(await crowd(provider, 2))

        first = asyncio.run(two())
        # The first loop's connections were closed with it (no socket left on a dead loop).
        assert server.wait_until(lambda: server.open_connections == 0)
        second = asyncio.run(two())
        asyncio.run(provider.aclose())
        assert server.wait_until(lambda: server.open_connections == 0)
    assert [r.charge_id for r in first + second] == ["ch_1"] * 4
    assert server.count == 4  # four charges, four requests: nothing charged twice or lost


def test_a_closed_async_client_refuses_before_sending_from_any_loop() -> None:
    with RogueServer(Reply(200, CHARGED)) as server:
        provider = AsyncKNAIProvider(API_KEY, SLUG, server.url)
        asyncio.run(provider.charge(TOKEN, 1, "gpt-4"))
        asyncio.run(provider.aclose())
        with pytest.raises(RuntimeError, match="closed"):
            asyncio.run(provider.charge(TOKEN, 1, "gpt-4"))
    assert server.count == 1


def test_constructing_the_async_client_opens_nothing_and_needs_no_loop() -> None:
    with RogueServer(Reply(200, CHARGED)) as server:
        provider = AsyncKNAIProvider(API_KEY, SLUG, server.url, max_connections=1000)
        assert server.connections == 0
        asyncio.run(provider.aclose())  # closing an unused client is free, from any loop
    assert server.connections == 0
