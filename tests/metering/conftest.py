"""Meters of both flavours bound to the sandbox wallet over a loopback socket."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from knai import AsyncKNAIProvider, ChargeResult, KNAIProvider
from knai.metering import AsyncMeter, AsyncMeteredStream, Meter, MeteredStream, PriceTable
from knai.testing import DEMO_PROVIDER_SLUG, RunningSandbox, SandboxAdmin

SLUG = DEMO_PROVIDER_SLUG
Metered = MeteredStream | AsyncMeteredStream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Upstream:
    """An LLM stream standing in for the SDK's: hands out chunks, paced when async.

    It records, for each chunk it hands out, whether the metered stream had
    already stopped by then, and whether anyone closed it.
    """

    def __init__(
        self, chunks: list[Any], pace: float = 0.002, hold_after: int | None = None
    ) -> None:
        self.chunks = chunks
        self.pace = pace
        # After this many chunks the async stream waits for the meter to stop,
        # so a slow wallet under load cannot let the stream run out first.
        self.hold_after = hold_after
        self.metered: Metered | None = None
        self.handed: list[bool] = []
        self.closed = False
        self.fail_at: int | None = None

    def _hand(self, index: int) -> None:
        if index == self.fail_at:
            raise ConnectionResetError("upstream went away")
        self.handed.append(self.metered is not None and self.metered.stopped is not None)

    def __iter__(self) -> Iterator[Any]:
        for index, chunk in enumerate(self.chunks):
            self._hand(index)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[Any]:
        for index, chunk in enumerate(self.chunks):
            await asyncio.sleep(self.pace)
            if index == self.hold_after:
                await self._until_stopped()
            self._hand(index)
            yield chunk

    async def _until_stopped(self, limit: float = 30.0) -> None:
        # Bounded, so a meter that never stops fails the test instead of hanging it.
        deadline = asyncio.get_running_loop().time() + limit
        while self.metered is None or self.metered.stopped is None:
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(self.pace)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Flavour:
    """A `Meter` or an `AsyncMeter`, every call awaited the same way."""

    def __init__(self, name: str, sync: KNAIProvider, async_: AsyncKNAIProvider) -> None:
        self.name = name
        self.sync = sync
        self.async_ = async_
        self.last: Metered | None = None

    async def settle(self, metered: Metered) -> None:
        if isinstance(metered, AsyncMeteredStream):
            await metered.settle()
        else:
            metered.settle()

    def meter(self, prices: PriceTable | None = None) -> Meter | AsyncMeter:
        return Meter(self.sync, prices) if self.name == "sync" else AsyncMeter(self.async_, prices)

    async def charge(
        self, meter: Meter | AsyncMeter, *args: Any, **kwargs: Any
    ) -> ChargeResult | None:
        if isinstance(meter, AsyncMeter):
            return await meter.charge(*args, **kwargs)
        return meter.charge(*args, **kwargs)

    async def stream(
        self,
        meter: Meter | AsyncMeter,
        token: str,
        upstream: Any,
        *,
        model: str,
        key: str,
        step: int,
        each: Callable[[int], object] | None = None,
    ) -> tuple[Metered, list[Any]]:
        """Consume `upstream` metered; `each(i)` runs (or is awaited) after chunk i."""
        got: list[Any] = []
        if isinstance(meter, AsyncMeter):
            async with meter.stream(token, model=model, key=key, step=step) as ametered:
                self.last = ametered
                if isinstance(upstream, Upstream):
                    upstream.metered = ametered
                async for chunk in ametered.wrap(upstream):
                    got.append(chunk)
                    if each is not None and inspect.isawaitable(done := each(len(got) - 1)):
                        await done
            return ametered, got
        with meter.stream(token, model=model, key=key, step=step) as metered:
            self.last = metered
            if isinstance(upstream, Upstream):
                upstream.metered = metered
            for chunk in metered.wrap(upstream):
                got.append(chunk)
                if each is not None and inspect.isawaitable(done := each(len(got) - 1)):
                    await done
        return metered, got


@pytest.fixture(params=["sync", "async"])
def flavour(
    request: pytest.FixtureRequest,
    knai_provider: KNAIProvider,
    knai_async_provider: AsyncKNAIProvider,
) -> Flavour:
    """Each test runs once with `Meter`, once with `AsyncMeter`."""
    return Flavour(request.param, knai_provider, knai_async_provider)


@pytest.fixture
def admin(knai_sandbox_server: RunningSandbox) -> SandboxAdmin:
    return knai_sandbox_server.admin


def wallet(admin: SandboxAdmin, user: str, balance: int) -> str:
    """A new wallet holding `balance`; returns the token of an active session on it."""
    admin.create_user(SLUG, user, balance=balance)
    return admin.open_session(SLUG, user).session_token
