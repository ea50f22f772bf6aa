"""The async sender: a task claims and settles (store calls in threads), a task per delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._deliver import Backoff, failed, logger, sent
from ._store import Claim, Outcome, Store

if TYPE_CHECKING:
    from knai import AsyncKNAIProvider

__all__ = ["AsyncSender"]

_STORE_ERROR_PAUSE = 0.5


class AsyncSender:
    """Delivers a store's pending charges on the running event loop until stopped."""

    def __init__(
        self,
        provider: Callable[[], AsyncKNAIProvider],
        store: Store,
        *,
        concurrency: int,
        poll_interval: float,
        backoff: Backoff,
    ) -> None:
        self._provider = provider
        self._store = store
        self._concurrency = concurrency
        self._poll = poll_interval
        self._backoff = backoff
        self._events: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._stopping = False
        self._deliveries: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Whether the claiming task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the claiming task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="knai-outbox-sender")

    def wake(self) -> None:
        """Claim now rather than at the next poll (call from the loop)."""
        self._events.put_nowait(None)

    async def stop(self, timeout: float | None) -> bool:
        """Stop claiming, let deliveries in flight settle; True if it ended within `timeout`."""
        self._stopping = True
        self.wake()
        task = self._task
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            # Cancelled deliveries keep their leases; the rows stay pending.
            task.cancel()
            for delivery in list(self._deliveries):
                delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        return True

    async def _deliver(self, claim: Claim) -> None:
        try:
            result = await self._provider().charge(
                claim.session_token,
                claim.amount_tokens,
                claim.model,
                idempotency_key=claim.send_key,
            )
        except Exception as exc:
            outcome = failed(claim, exc, self._backoff)
        else:
            outcome = sent(claim, result)
        self._events.put_nowait(outcome)

    async def _run(self) -> None:
        in_flight = 0
        unsettled: list[Outcome] = []
        while True:
            if unsettled and await self._settle(unsettled):
                unsettled = []
            if self._stopping and in_flight == 0 and not unsettled:
                break
            if not self._stopping and in_flight < self._concurrency:
                for claim in await self._claim(self._concurrency - in_flight):
                    task = asyncio.get_running_loop().create_task(self._deliver(claim))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)
                    in_flight += 1
            try:
                event = await asyncio.wait_for(self._events.get(), self._poll)
            except asyncio.TimeoutError:
                continue
            events = [event]
            while not self._events.empty():
                events.append(self._events.get_nowait())
            for item in events:
                if item is not None:
                    unsettled.append(item)
                    in_flight -= 1
        try:
            await asyncio.to_thread(self._store.release)
        except Exception as exc:
            logger.error("outbox: cannot release leases (%s): %s", type(exc).__name__, exc)

    async def _claim(self, limit: int) -> list[Claim]:
        try:
            return await asyncio.to_thread(self._store.claim, limit)
        except Exception as exc:
            logger.error("outbox: cannot claim from the store (%s): %s", type(exc).__name__, exc)
            await asyncio.sleep(_STORE_ERROR_PAUSE)
            return []

    async def _settle(self, outcomes: list[Outcome]) -> bool:
        try:
            await asyncio.to_thread(self._store.settle, list(outcomes))
        except Exception as exc:
            logger.error("outbox: cannot settle in the store (%s): %s", type(exc).__name__, exc)
            await asyncio.sleep(_STORE_ERROR_PAUSE)
            return False
        return True
