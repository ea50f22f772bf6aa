"""The async sender: a task claims and settles (store calls in threads), a task per delivery."""

from __future__ import annotations

import asyncio
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
            # The rows of cancelled deliveries stay pending; their leases are
            # given up so that the next start (here or elsewhere) resends them.
            task.cancel()
            for delivery in list(self._deliveries):
                delivery.cancel()
            await asyncio.wait({task, *self._deliveries}, timeout=1.0)
            try:
                await asyncio.to_thread(self._store.release)
            except Exception as exc:
                logger.error("outbox: cannot release leases (%s): %s", type(exc).__name__, exc)
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
        # In flight = the delivery tasks still running: a cancelled one leaves
        # the set without sending an outcome, so the count cannot drift.
        unsettled: list[Outcome] = []
        loop = asyncio.get_running_loop()
        while True:
            free = 0 if self._stopping else self._concurrency - len(self._deliveries)
            if unsettled or free > 0:
                # One transaction records what came back and claims what is due.
                claims = await self._exchange(unsettled, free)
                if claims is not None:
                    unsettled = []
                    for claim in claims:
                        task = loop.create_task(self._deliver(claim))
                        self._deliveries.add(task)
                        task.add_done_callback(self._deliveries.discard)
            idle = not self._deliveries and self._events.empty()
            if self._stopping and idle and not unsettled:
                break
            try:
                event = await asyncio.wait_for(self._events.get(), self._poll)
            except asyncio.TimeoutError:
                continue
            events = [event]
            while not self._events.empty():
                events.append(self._events.get_nowait())
            unsettled.extend(item for item in events if item is not None)
        try:
            await asyncio.to_thread(self._store.release)
        except Exception as exc:
            logger.error("outbox: cannot release leases (%s): %s", type(exc).__name__, exc)

    async def _exchange(self, outcomes: list[Outcome], limit: int) -> list[Claim] | None:
        try:
            return await asyncio.to_thread(self._store.exchange, list(outcomes), limit)
        except Exception as exc:
            # The leases keep the rows; the outcomes are retried on the next turn.
            logger.error("outbox: store call failed (%s): %s", type(exc).__name__, exc)
            await asyncio.sleep(_STORE_ERROR_PAUSE)
            return None
