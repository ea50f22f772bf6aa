"""`Outbox` and `AsyncOutbox` behind one awaitable surface, so each behaviour is proved on both."""

from __future__ import annotations

from typing import Any

from knai.outbox import AsyncOutbox, Outbox, OutboxEntry, OutboxStats


class OutboxTwin:
    """An outbox of either flavour; every method awaited the same way."""

    def __init__(self, outbox: Outbox | AsyncOutbox) -> None:
        self.outbox = outbox
        self.is_async = isinstance(outbox, AsyncOutbox)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.outbox, name)(*args, **kwargs)
        return await result if self.is_async else result

    async def charge(self, *args: Any, **kwargs: Any) -> OutboxEntry:
        entry: OutboxEntry = await self._call("charge", *args, **kwargs)
        return entry

    async def retry_dead(self, *args: Any, **kwargs: Any) -> OutboxEntry:
        entry: OutboxEntry = await self._call("retry_dead", *args, **kwargs)
        return entry

    async def start(self) -> None:
        await self._call("start")

    async def stop(self, *args: Any, **kwargs: Any) -> bool:
        return bool(await self._call("stop", *args, **kwargs))

    async def drain(self, *args: Any, **kwargs: Any) -> bool:
        return bool(await self._call("drain", *args, **kwargs))

    async def pending(self) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = await self._call("pending")
        return entries

    async def dead(self) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = await self._call("dead")
        return entries

    async def get(self, key: str) -> OutboxEntry | None:
        entry: OutboxEntry | None = await self._call("get", key)
        return entry

    async def stats(self) -> OutboxStats:
        stats: OutboxStats = await self._call("stats")
        return stats

    async def close(self) -> None:
        await self._call("aclose" if self.is_async else "close")
