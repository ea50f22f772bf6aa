"""Streams charged as they flow, sync and async, against the sandbox wallet.

Each test reads the ledger the sandbox admin reports: which keys were charged,
what amounts, and that it matches what the metered stream says it charged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from knai import APIConnectionError, InsufficientBalanceError, SessionExpiredError
from knai.metering import AsyncMeteredStream, Price, PriceTable, Usage
from knai.testing import SandboxAdmin
from tests.metering import _fixtures as fx
from tests.metering.conftest import SLUG, Flavour, Upstream, wallet

pytestmark = pytest.mark.anyio


def ledger(admin: SandboxAdmin, user: str = "alice") -> list[tuple[str | None, int]]:
    return [(c.idempotency_key, c.amount_tokens) for c in admin.charges(SLUG, user)]


def long_chat(deltas: int, usage: bool = True) -> list[Any]:
    """A Chat Completions stream of `deltas` one-token chunks (from the fixture's chunks)."""
    chunks = fx.chat_chunks("chat_stream_usage")
    body = [chunks[1].model_copy(update={"id": f"c{i}"}) for i in range(deltas)]
    report = chunks[-1].model_copy(
        update={"usage": chunks[-1].usage.model_copy(update={"completion_tokens": deltas})}  # type: ignore[union-attr]
    )
    return [chunks[0], *body, chunks[-2], *([report] if usage else [])]


# (stream, price, step, expected increments, expected rest, reported usage)
CASES = [
    # 12 deltas at 2: increments of 6 at 3, 6, 9, 12 deltas; the report prices the rest.
    ("chat_stream_usage", Price(1, 2), 5, [6, 6, 6, 6], 2072 - 24, Usage(128, 1920, 0, 12)),
    ("chat_stream_tool_reasoning", Price(1, 1), 2, [2, 2, 2], 290 - 6, Usage(80, 0, 0, 210, 192)),
    ("response_stream", Price(1, 1), 3, [3, 3], 1700 - 6, Usage(176, 1152, 0, 372, 320)),
    # message_start's input is exact: the first increment falls due on it.
    ("anthropic_stream", Price(1, 1), 1000, [2010], 2049 - 2010, Usage(21, 1800, 188, 40)),
]


@pytest.mark.parametrize("form", ["sdk", "json"])
@pytest.mark.parametrize(
    ("name", "price", "step", "increments", "rest", "usage"), CASES, ids=[c[0] for c in CASES]
)
async def test_increments_then_the_reported_rest_each_under_its_key(
    flavour: Flavour,
    admin: SandboxAdmin,
    form: str,
    name: str,
    price: Price,
    step: int,
    increments: list[int],
    rest: int,
    usage: Usage,
) -> None:
    token = wallet(admin, "alice", 100_000)
    chunks = fx.STREAMS[name](name) if form == "sdk" else fx.raw(name)
    meter = flavour.meter(PriceTable(default=price))
    metered, got = await flavour.stream(
        meter, token, Upstream(chunks), model="m-1", key="req-42", step=step
    )
    assert all(a is b for a, b in zip(got, chunks, strict=True))
    expected = [(f"req-42:{n}", a) for n, a in enumerate(increments, 1)]
    assert ledger(admin) == [*expected, ("req-42:final", rest)]
    assert metered.charged == sum(increments) + rest == price.amount(usage)
    assert metered.exact
    assert metered.usage == usage
    assert metered.stopped is None
    assert metered.unsettled == []
    assert {c.model for c in admin.charges(SLUG, "alice")} == {"m-1"}


async def test_a_refusal_halfway_stops_within_one_chunk_and_closes_the_upstream(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    """25 in the wallet, increments of 10: the third is refused and the stream stops."""
    token = wallet(admin, "alice", 25)
    # The async stream keeps flowing while increments are in flight; at chunk 150
    # it waits for the refusal, however slow the wallet is under load.
    upstream = Upstream(long_chat(200), pace=0.005, hold_after=150)
    metered, got = await flavour.stream(
        flavour.meter(), token, upstream, model="gpt-4o", key="req-9", step=10
    )
    assert isinstance(metered.stopped, InsufficientBalanceError)
    # The chunk handed out when the refusal was known was not passed on, nor any after it.
    assert len(got) == len(upstream.handed) - 1
    assert len(got) < 200
    assert upstream.closed
    assert ledger(admin) == [("req-9:1", 10), ("req-9:2", 10)]
    assert metered.charged == 20
    assert admin.balance(SLUG, "alice") == 5
    if flavour.name == "async":
        # Increments run in the background: chunks flowed while the refusal was in flight.
        assert upstream.handed[-1] is True
        assert upstream.handed.count(True) == 1


async def test_an_expired_session_stops_the_stream(flavour: Flavour, admin: SandboxAdmin) -> None:
    info = admin.open_session(SLUG, "demo-user")
    upstream = Upstream(long_chat(200), pace=0.005)

    async def expire(index: int) -> None:
        if index == 12:  # once increment 1 (due at chunk 10) has landed
            await _wait_for(admin, 1, "demo-user")
            admin.expire_session(info.session_id)

    metered, got = await flavour.stream(
        flavour.meter(), info.session_token, upstream, model="gpt-4o", key="r", step=10, each=expire
    )
    assert isinstance(metered.stopped, SessionExpiredError)
    assert upstream.closed
    assert len(got) < 200
    assert ledger(admin, "demo-user") == [("r:1", 10)]
    assert metered.charged == 10


async def _wait_for(admin: SandboxAdmin, count: int, user: str = "alice") -> None:
    """Until the wallet holds `count` charges (the background increments landed)."""
    deadline = time.monotonic() + 5
    while len(admin.charges(SLUG, user)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_a_crash_mid_stream_then_a_replay_charges_nothing_twice(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    chunks = fx.chat_chunks("chat_stream_usage")
    meter = flavour.meter()
    # The first attempt dies after 8 chunks (7 deltas: increments at 3 and 6) and
    # never settles, as a killed process would not.
    crashed = meter.stream(token, model="gpt-4o", key="req-5", step=3)
    if isinstance(crashed, AsyncMeteredStream):
        wrapped = crashed.wrap(Upstream(chunks))
        for _ in range(8):
            await wrapped.__anext__()
        await _wait_for(admin, 2)
    else:
        sync_wrapped = crashed.wrap(Upstream(chunks))
        for _ in range(8):
            next(sync_wrapped)
    assert ledger(admin) == [("req-5:1", 3), ("req-5:2", 3)]
    # The replay of the same chunks under the same key.
    metered, _ = await flavour.stream(
        meter, token, Upstream(chunks), model="gpt-4o", key="req-5", step=3
    )
    expected = [
        ("req-5:1", 3),
        ("req-5:2", 3),
        ("req-5:3", 3),
        ("req-5:4", 3),
        ("req-5:final", 2048),
    ]
    assert ledger(admin) == expected
    assert metered.charged == 2060
    # And a replay of the whole settled stream charges nothing at all.
    await flavour.stream(meter, token, Upstream(chunks), model="gpt-4o", key="req-5", step=3)
    assert ledger(admin) == expected
    assert admin.balance(SLUG, "alice") == 100_000 - 2060


async def test_an_unknown_outcome_is_replayed_under_its_own_key_at_settlement(
    flavour: Flavour, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """Increment 1 is applied, then every attempt loses its connection: settled once."""
    token = wallet(admin, "alice", 100_000)
    admin.inject_fault("charge", drop="after")
    admin.inject_fault("charge", drop="before", times=2)
    with caplog.at_level(logging.WARNING, logger="knai.metering"):
        metered, _ = await flavour.stream(
            flavour.meter(),
            token,
            Upstream(fx.chat_chunks("chat_stream_usage")),
            model="gpt-4o",
            key="req-3",
            step=10,
        )
    assert ledger(admin) == [("req-3:1", 10), ("req-3:final", 2050)]
    assert metered.charged == 2060
    assert metered.unsettled == []
    assert any("req-3:1" in r.getMessage() and "same key" in r.getMessage() for r in caplog.records)


async def test_an_outcome_still_unknown_after_settling_is_kept_for_a_later_settle(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    # All three attempts of the final charge fail, the first after applying it.
    admin.inject_fault("charge", drop="after")
    admin.inject_fault("charge", drop="before", times=2)
    metered, _ = await flavour.stream(
        flavour.meter(),
        token,
        Upstream(fx.chat_chunks("chat_stream_usage")),
        model="gpt-4o",
        key="req-8",
        step=10**6,
    )
    [unsettled] = metered.unsettled
    assert (unsettled.idempotency_key, unsettled.amount_tokens) == ("req-8:final", 2060)
    assert isinstance(unsettled.error, APIConnectionError)
    assert unsettled.error.may_have_been_applied
    assert metered.charged == 0
    await flavour.settle(metered)
    assert metered.unsettled == []
    assert metered.charged == 2060
    assert ledger(admin) == [("req-8:final", 2060)]


async def test_a_stream_without_usage_settles_the_lower_bound_and_warns_once(
    flavour: Flavour, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    token = wallet(admin, "alice", 100_000)
    with caplog.at_level(logging.WARNING, logger="knai.metering"):
        metered, _ = await flavour.stream(
            flavour.meter(PriceTable(default=Price(1, 3))),
            token,
            Upstream(fx.chat_chunks("chat_stream_no_usage")),
            model="gpt-4o",
            key="q",
            step=20,
        )
    assert not metered.exact
    assert metered.usage == Usage(output_tokens=12)
    assert ledger(admin) == [("q:1", 21), ("q:final", 15)]
    assert metered.charged == 36
    [warning] = [r for r in caplog.records if r.name == "knai.metering"]
    assert "include_usage" in warning.getMessage()


async def test_an_exception_inside_the_block_still_settles_what_was_streamed(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    upstream = Upstream(fx.chat_chunks("chat_stream_usage"))
    upstream.fail_at = 8  # after the role chunk and 7 deltas
    with pytest.raises(ConnectionResetError):
        await flavour.stream(flavour.meter(), token, upstream, model="gpt-4o", key="e", step=3)
    metered = flavour.last
    assert metered is not None
    assert ledger(admin) == [("e:1", 3), ("e:2", 3), ("e:final", 1)]
    assert metered.charged == 7
    assert not metered.exact


async def test_a_cancelled_async_block_still_settles_in_the_background(
    knai_async_provider: Any, admin: SandboxAdmin
) -> None:
    """A disconnect cancels the handler, twice (as a cancel scope would): still all charged."""
    from knai.metering import AsyncMeter

    token = wallet(admin, "alice", 100_000)
    meter = AsyncMeter(knai_async_provider)
    seen: list[Any] = []
    holder: list[AsyncMeteredStream] = []

    async def handler() -> None:
        async with meter.stream(token, model="gpt-4o", key="c", step=5) as metered:
            holder.append(metered)
            async for chunk in metered.wrap(Upstream(long_chat(200), pace=0.005)):
                seen.append(chunk)

    task = asyncio.ensure_future(handler())
    while len(seen) < 23:  # the role chunk and 22 deltas: increments at 5, 10, 15, 20
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.sleep(0.003)  # the block is settling now: cancel that too
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_for(admin, 5)
    [metered] = holder
    deadline = time.monotonic() + 5  # the settlement's answer lands in the background
    while metered.charged < sum(a for _, a in ledger(admin)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [key for key, _ in ledger(admin)] == ["c:1", "c:2", "c:3", "c:4", "c:final"]
    assert (
        sum(amount for _, amount in ledger(admin)) == metered.charged == metered.usage.output_tokens
    )
    assert not metered.exact


async def test_the_session_token_is_in_no_repr(flavour: Flavour, admin: SandboxAdmin) -> None:
    token = wallet(admin, "alice", 100_000)
    admin.inject_fault("charge", drop="before", times=3)
    metered, _ = await flavour.stream(
        flavour.meter(),
        token,
        Upstream(fx.chat_chunks("chat_stream_usage")),
        model="gpt-4o",
        key="t",
        step=10**6,
    )
    assert metered.unsettled
    assert token not in repr(metered)
    assert token not in repr(metered.unsettled)
    assert token not in str(metered.unsettled[0].error)
