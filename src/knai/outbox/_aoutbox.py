"""`AsyncOutbox`: durable charges over an `AsyncKNAIProvider`; store calls never block the loop."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._async_sender import AsyncSender
from ._common import OutboxBase
from ._entry import OutboxEntry, OutboxStats
from ._open import open_store
from ._store import Store

if TYPE_CHECKING:
    from typing_extensions import Self

    from knai import AsyncKNAIProvider

__all__ = ["AsyncOutbox"]

_DRAIN_POLL = 0.02


class AsyncOutbox(OutboxBase["AsyncKNAIProvider"]):
    """`Outbox` for asyncio apps: the same arguments, each method awaited.

    Every store call runs in a worker thread (`asyncio.to_thread`); the sender
    is a task on the loop that runs `start()`.

    Example::

        from knai import AsyncKNAIProvider
        from knai.outbox import AsyncOutbox

        async with AsyncKNAIProvider("sk_...", "acme") as aprovider:
            async with AsyncOutbox(aprovider, "charges.db") as outbox:
                entry = await outbox.charge(token, 1500, "gpt-4", idempotency_key=request_id)
    """

    def __init__(
        self,
        provider: AsyncKNAIProvider | Callable[[], AsyncKNAIProvider],
        store: str | os.PathLike[str] | Store,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        retry_backoff: tuple[float, float] = (0.5, 60.0),
        drain_timeout: float = 10.0,
    ) -> None:
        from knai import AsyncKNAIProvider

        super().__init__(
            provider,
            store,
            provider_type=AsyncKNAIProvider,
            concurrency=concurrency,
            poll_interval=poll_interval,
            retry_backoff=retry_backoff,
            drain_timeout=drain_timeout,
            # Opening a store connects or creates a file: done in a thread, on first use.
            open_now=False,
        )
        self._sender: AsyncSender | None = None
        self._opening = asyncio.Lock()

    async def charge(
        self,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
        connection: Any = None,
    ) -> OutboxEntry:
        """Store a charge durably; the sender delivers it. See `Outbox.charge`.

        With PostgreSQL, `connection` may be a psycopg ``AsyncConnection``
        whose open transaction the charge joins.
        """
        key = self._checked_key(session_token, amount_tokens, model, idempotency_key)
        self._resume_after_fork()
        store = await self._ready()
        add_async = getattr(store, "add_async", None)
        if connection is not None and add_async is not None and _is_async(connection):
            entry: OutboxEntry = await add_async(
                key, session_token, amount_tokens, model, connection=connection
            )
        else:
            entry = await asyncio.to_thread(
                store.add, key, session_token, amount_tokens, model, connection=connection
            )
        if self._sender is not None and connection is None:
            self._sender.wake()
        return entry

    async def retry_dead(self, key: str, *, session_token: str | None = None) -> OutboxEntry:
        """Resend a dead charge under a derived key. See `Outbox.retry_dead`."""
        self._resume_after_fork()
        store = await self._ready()
        entry = await asyncio.to_thread(store.retry_dead, key, session_token)
        if self._sender is not None:
            self._sender.wake()
        return entry

    async def start(self) -> None:
        """Start the sender on the running loop; it resumes what a crashed process left."""
        if self._sender is not None and self._sender.alive:
            return
        store = await self._ready()
        self._sender = AsyncSender(
            self._provider,
            store,
            concurrency=self.concurrency,
            poll_interval=self.poll_interval,
            backoff=self._backoff,
        )
        self._sender.start()

    async def drain(self, timeout: float | None = None) -> bool:
        """Deliver until nothing is pending (starting the sender if needed); True if so in time."""
        self._resume_after_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        await self.start()
        if self._sender is not None:
            self._sender.wake()
        return await self._wait_empty(deadline)

    async def _wait_empty(self, deadline: float | None) -> bool:
        while (await self.stats()).pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_DRAIN_POLL)
        return True

    async def stop(self, timeout: float | None = None) -> bool:
        """Drain for up to `timeout` (default `drain_timeout`) seconds, then stop the sender."""
        timeout = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        sender, self._sender = self._sender, None
        if sender is None:
            return (await self.stats()).pending == 0
        drained = await self._wait_empty(deadline) if sender.alive else False
        await sender.stop(max(0.0, deadline - time.monotonic()))
        return drained

    async def aclose(self) -> None:
        """`stop()`, then close the store and any provider built by this outbox."""
        await self.stop()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
        made, self._made = self._made, None
        if made is not None:
            await made.aclose()

    async def pending(self) -> list[OutboxEntry]:
        """Charges not yet settled, in flight included, oldest first."""
        return await asyncio.to_thread((await self._ready()).entries, "pending")

    async def dead(self) -> list[OutboxEntry]:
        """Charges the wallet refused, oldest first, each with its `error`."""
        return await asyncio.to_thread((await self._ready()).entries, "dead")

    async def get(self, key: str) -> OutboxEntry | None:
        """The entry under `key`, or None."""
        return await asyncio.to_thread((await self._ready()).get, key)

    async def stats(self) -> OutboxStats:
        """Counts of pending, sent and dead charges, and the oldest pending one's age."""
        return await asyncio.to_thread((await self._ready()).stats)

    async def _ready(self) -> Store:
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    self._store = await asyncio.to_thread(open_store, self._spec)
        return self._store

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _resume_after_fork(self) -> None:
        if self._forked() and self._store is not None:
            self._sender = AsyncSender(
                self._provider,
                self._store,
                concurrency=self.concurrency,
                poll_interval=self.poll_interval,
                backoff=self._backoff,
            )
            self._sender.start()

    def _after_fork(self) -> None:
        was_running = self._sender is not None
        self._sender = None
        self._fork_reset(was_running)

    def _at_exit(self) -> None:
        # The loop that ran the sender is gone by now; what is pending stays in
        # the store, and its leases lapse with this process.
        return None


def _is_async(connection: object) -> bool:
    return inspect.iscoroutinefunction(getattr(connection, "execute", None))
