"""A `Meter`/`AsyncMeter` charging through an outbox, end to end against the sandbox wallet.

Each test runs on both flavours over a SQLite store: the meter's charges are
stored (not sent) until the outbox's sender runs, then land in the wallet's
ledger once each, under the keys the inline meter would have used.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from knai import AsyncKNAIProvider, KNAIProvider
from knai.metering import AsyncMeter, AsyncMeteredStream, Meter, MeteredStream
from knai.outbox import AsyncOutbox, Outbox, OutboxEntry
from knai.testing import SandboxAdmin
from tests.outbox._twin import OutboxTwin
from tests.outbox.conftest import SLUG, USER

pytestmark = pytest.mark.anyio

Make = Callable[..., OutboxTwin]
MODEL = "gpt-4o"


def completion(prompt: int, output: int) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": MODEL,
        "usage": {"prompt_tokens": prompt, "completion_tokens": output},
    }


def chunks(words: int, prompt: int) -> list[dict[str, Any]]:
    """A streamed answer of `words` deltas, then its usage report."""
    deltas = [{"choices": [{"index": 0, "delta": {"content": f"w{n}"}}]} for n in range(words)]
    report = {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": words}}
    return [*deltas, report]


def ledger(admin: SandboxAdmin) -> dict[str, int]:
    return {c.idempotency_key or "": c.amount_tokens for c in admin.charges(SLUG, USER)}


def meter_over(
    twin: OutboxTwin, provider: KNAIProvider, aprovider: AsyncKNAIProvider
) -> Meter[OutboxEntry] | AsyncMeter[OutboxEntry]:
    if isinstance(twin.outbox, AsyncOutbox):
        return AsyncMeter(aprovider, outbox=twin.outbox)
    return Meter(provider, outbox=twin.outbox)


async def charge(meter: Meter[OutboxEntry] | AsyncMeter[OutboxEntry], *args: Any, **kw: Any) -> Any:
    if isinstance(meter, AsyncMeter):
        return await meter.charge(*args, **kw)
    return meter.charge(*args, **kw)


async def stream(
    meter: Meter[OutboxEntry] | AsyncMeter[OutboxEntry], token: str, upstream: list[Any], key: str
) -> tuple[MeteredStream | AsyncMeteredStream, int]:
    seen = 0
    if isinstance(meter, AsyncMeter):

        async def source() -> Any:
            for item in upstream:
                yield item

        async with meter.stream(token, model=MODEL, key=key, step=4) as ametered:
            async for _ in ametered.wrap(source()):
                seen += 1
        return ametered, seen
    with meter.stream(token, model=MODEL, key=key, step=4) as metered:
        for _ in metered.wrap(upstream):
            seen += 1
    return metered, seen


async def test_a_charged_response_is_stored_then_lands_once_under_its_key(
    make_outbox: Make,
    admin: SandboxAdmin,
    token: str,
    tmp_path: Path,
    knai_provider: KNAIProvider,
    knai_async_provider: AsyncKNAIProvider,
) -> None:
    twin = make_outbox(tmp_path / "outbox.db")
    meter = meter_over(twin, knai_provider, knai_async_provider)
    entry = await charge(meter, token, completion(30, 12), idempotency_key="req-1")
    assert isinstance(entry, OutboxEntry)
    assert (entry.state, entry.idempotency_key, entry.amount_tokens) == ("pending", "req-1", 42)
    assert ledger(admin) == {}  # stored, not sent: the sender has not started
    # The same response again under the same key (a retried request) is the same entry.
    again = await charge(meter, token, completion(30, 12), idempotency_key="req-1")
    assert again.idempotency_key == "req-1"
    await twin.start()
    assert await twin.drain(5)
    assert ledger(admin) == {"req-1": 42}
    assert await charge(meter, token, completion(0, 0)) is None  # costs nothing: nothing stored
    assert (await twin.stats()).pending == 0


async def test_a_stream_stores_its_increments_and_settlement_under_the_inline_keys(
    make_outbox: Make,
    admin: SandboxAdmin,
    token: str,
    tmp_path: Path,
    knai_provider: KNAIProvider,
    knai_async_provider: AsyncKNAIProvider,
) -> None:
    """Nine deltas at step 4: increments `s:1` and `s:2` as it flows, the rest at `s:final`;
    replaying the same chunks under the same key (a crash, a retried request) adds nothing."""
    twin = make_outbox(tmp_path / "outbox.db")
    meter = meter_over(twin, knai_provider, knai_async_provider)
    metered, seen = await stream(meter, token, chunks(9, 5), "s")
    assert seen == 10
    assert metered.stopped is None
    assert metered.charged == 5 + 9  # what was stored
    assert ledger(admin) == {}
    await stream(meter, token, chunks(9, 5), "s")
    await twin.start()
    assert await twin.drain(5)
    got = ledger(admin)
    assert sorted(got) == ["s:1", "s:2", "s:final"]
    assert sum(got.values()) == 5 + 9
    assert len(admin.charges(SLUG, USER)) == 3


async def test_a_refusal_does_not_stop_a_deferred_stream_it_lands_in_the_dead_list(
    make_outbox: Make,
    admin: SandboxAdmin,
    tmp_path: Path,
    knai_provider: KNAIProvider,
    knai_async_provider: AsyncKNAIProvider,
) -> None:
    """The wallet answers after the stream: a charge over the balance is dead, not a stop."""
    admin.create_user(SLUG, "poor", balance=6)
    token = admin.open_session(SLUG, "poor").session_token
    twin = make_outbox(tmp_path / "outbox.db")
    meter = meter_over(twin, knai_provider, knai_async_provider)
    metered, seen = await stream(meter, token, chunks(9, 5), "p")
    assert (seen, metered.stopped, metered.charged) == (10, None, 14)
    await twin.start()
    assert await twin.drain(5)
    # Stored: p:1 and p:2 (4 each, the lower bound as it flowed), p:final (the 6 left).
    dead = {e.idempotency_key: e.amount_tokens for e in await twin.dead()}
    landed = {c.idempotency_key or "": c.amount_tokens for c in admin.charges(SLUG, "poor")}
    assert sorted([*dead, *landed]) == ["p:1", "p:2", "p:final"]
    assert dead
    assert sum(landed.values()) <= 6
    assert all(e.error is not None and e.error.status_code == 402 for e in await twin.dead())


async def test_a_meter_refuses_an_outbox_of_the_other_flavour(
    knai_provider: KNAIProvider, knai_async_provider: AsyncKNAIProvider, tmp_path: Path
) -> None:
    outbox = Outbox(knai_provider, tmp_path / "o.db")
    aoutbox = AsyncOutbox(knai_async_provider, tmp_path / "a.db")
    with pytest.raises(TypeError, match="outbox must be an AsyncOutbox"):
        AsyncMeter(knai_async_provider, outbox=outbox)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="outbox must be an Outbox"):
        Meter(knai_provider, outbox=aoutbox)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="outbox must be an Outbox"):
        Meter(knai_provider, outbox=object())  # type: ignore[call-overload]
    outbox.close()
    await aoutbox.aclose()


def test_import_knai_metering_does_not_load_the_outbox() -> None:
    code = "import sys, knai.metering; print('knai.outbox' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
