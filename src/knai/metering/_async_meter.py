"""`AsyncMeter`: `Meter` over an `AsyncKNAIProvider`, increments charged in the background."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from knai import AsyncKNAIProvider, KNAIError

from ._deferred import AsyncChargeOutbox, R, check_outbox
from ._meter import price_response
from ._prices import PriceTable
from ._stream import DEFAULT_STEP, MeteredBase, check_stream_args

if TYPE_CHECKING:
    from knai import ChargeResult
    from knai.outbox import OutboxEntry

    from ._prices import Price

__all__ = ["AsyncMeter", "AsyncMeteredStream"]

T = TypeVar("T")

# Settlements that outlive a cancelled `async with` block: held until done so
# the event loop does not drop them.
_settling: set[asyncio.Task[None]] = set()


class AsyncMeter(Generic[R]):
    """Charges LLM usage to wallet sessions through an `AsyncKNAIProvider` (asyncio).

    Args:
        provider: The client to charge through (not closed by the meter).
        prices: The price table (default: every model at 1 wallet token per
            model token).
        outbox: A `knai.outbox.AsyncOutbox` to charge through instead of
            inline; see `Meter`.
    """

    @overload
    def __init__(
        self: AsyncMeter[ChargeResult],
        provider: AsyncKNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncMeter[OutboxEntry],
        provider: AsyncKNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: AsyncChargeOutbox,
    ) -> None: ...

    def __init__(
        self,
        provider: AsyncKNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: AsyncChargeOutbox | None = None,
    ) -> None:
        # Untyped callers pass anything: the annotations are checked at run time.
        if not isinstance(cast(object, provider), AsyncKNAIProvider):
            raise TypeError("provider must be an AsyncKNAIProvider (use Meter for sync)")
        if prices is not None and not isinstance(cast(object, prices), PriceTable):
            raise TypeError("prices must be a PriceTable")
        if outbox is not None:
            check_outbox(outbox, is_async=True)
        self.provider: AsyncKNAIProvider = provider
        self.prices: PriceTable = prices if prices is not None else PriceTable()
        self.outbox: AsyncChargeOutbox | None = outbox

    async def charge(
        self,
        session_token: str,
        response: Any,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> R | None:
        """Charge the usage `response` reports; see `Meter.charge`."""
        model, amount = price_response(self.prices, response, model)
        if amount == 0:
            return None
        if self.outbox is not None:
            stored = await self.outbox.charge(
                session_token, amount, model, idempotency_key=idempotency_key
            )
            return cast("R", stored)
        charged = await self.provider.charge(
            session_token, amount, model, idempotency_key=idempotency_key
        )
        return cast("R", charged)

    def stream(
        self, session_token: str, *, model: str, key: str, step: int = DEFAULT_STEP
    ) -> AsyncMeteredStream:
        """A metered stream: `async with meter.stream(...) as metered:`; see `Meter.stream`."""
        check_stream_args(session_token, model, key, step)
        return AsyncMeteredStream(
            self.provider, session_token, model, key, step, self.prices.price(model), self.outbox
        )


async def _aclose(upstream: object) -> None:
    close = getattr(upstream, "aclose", None) or getattr(upstream, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


class AsyncMeteredStream(MeteredBase):
    """One stream charged as it flows, increments in the background (see `AsyncMeter.stream`).

    The stream never waits on the wallet: an increment is sent as a task and
    its outcome lands when it lands; a refusal ends the iteration at the next
    chunk. Leaving the `async with` block waits for those tasks, then settles
    as `MeteredStream` does. A cancelled block still settles: the settlement
    runs shielded and finishes in the background.

    Through an outbox (`AsyncMeter(..., outbox=...)`) each charge is stored
    under the same key instead; see `MeteredStream`.
    """

    def __init__(
        self,
        provider: AsyncKNAIProvider,
        session_token: str,
        model: str,
        key: str,
        step: int,
        price: Price,
        outbox: AsyncChargeOutbox | None = None,
    ) -> None:
        super().__init__(session_token, model, key, step, price)
        self._provider = provider
        self._outbox = outbox
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        settling = asyncio.ensure_future(self.settle())
        try:
            await asyncio.shield(settling)
        except asyncio.CancelledError:
            _settling.add(settling)
            settling.add_done_callback(_settling.discard)
            raise

    async def wrap(self, upstream: AsyncIterable[T]) -> AsyncIterator[T]:
        """Yield every chunk of `upstream` unchanged, charging increments in the background.

        Once a refusal has landed it yields nothing more, closes `upstream`
        (`aclose()` or `close()`, awaited if need be) and returns.
        """
        feed = self._tally.feed
        async for chunk in upstream:
            if self.stopped is not None:
                await _aclose(upstream)
                return
            due = feed(chunk)
            if due:
                self._spawn(self._increment_key(), due)
            yield chunk

    def _spawn(self, key: str, amount: int) -> None:
        task = asyncio.get_running_loop().create_task(self._send(key, amount))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for increments in flight, replay unsettled ones and charge the rest."""
        while self._tasks:
            await asyncio.gather(*self._tasks)
        for key, amount in self._settlement():
            await self._send(key, amount)

    async def _send(self, key: str, amount: int) -> None:
        if self._outbox is not None:
            await self._outbox.charge(self._token, amount, self.model, idempotency_key=key)
            self._succeeded(amount)
            return
        try:
            await self._provider.charge(self._token, amount, self.model, idempotency_key=key)
        except KNAIError as exc:
            self._failed(key, amount, exc)
        else:
            self._succeeded(amount)
