"""Outbox code a user would write, checked by `mypy --strict` and never run."""

from __future__ import annotations

import sys
from typing import Literal

from knai import AsyncKNAIProvider, ChargeResult, KNAIProvider
from knai.outbox import AsyncOutbox, DeliveryError, Outbox, OutboxEntry, OutboxStats

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


def sync_outbox(provider: KNAIProvider) -> None:
    with Outbox(provider, "charges.db") as outbox:
        entry = outbox.charge("tok", 1500, "gpt-4", idempotency_key="req-1")
        assert_type(entry, OutboxEntry)
        assert_type(entry.state, Literal["pending", "sent", "dead"])
        assert_type(entry.result, ChargeResult | None)
        assert_type(entry.error, DeliveryError | None)
        assert_type(outbox.drain(5.0), bool)
        assert_type(outbox.stats(), OutboxStats)
        assert_type(outbox.stats().oldest_pending_age, float | None)
        assert_type(outbox.dead(), list[OutboxEntry])
        assert_type(outbox.retry_dead("req-1"), OutboxEntry)
        outbox.charge("tok", "1500", "gpt-4")  # type: ignore[arg-type]
    Outbox(lambda: KNAIProvider("sk", "slug"), "postgresql://db/app")


async def async_outbox(provider: AsyncKNAIProvider) -> None:
    async with AsyncOutbox(provider, "charges.db") as outbox:
        assert_type(await outbox.charge("tok", 1, "m"), OutboxEntry)
        assert_type(await outbox.pending(), list[OutboxEntry])
        assert_type(await outbox.stop(1.0), bool)
    AsyncOutbox(provider, "x.db").charge  # noqa: B018
    Outbox(provider, "x.db")  # type: ignore[arg-type]
