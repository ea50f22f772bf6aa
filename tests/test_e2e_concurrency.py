"""Many charges at once through ONE shared client, over a real socket: the wallet stays exact.

8 threads share one KNAIProvider; 200 asyncio tasks share one AsyncKNAIProvider.
Amounts are random and the wallet cannot cover them all (some exceed its whole
balance), so some charges are refused. Afterwards the ledger holds exactly the
charges the clients saw succeed, once each, and the balance is the start minus
their sum. With outages injected mid-run (5xx answers, connections dropped
before and after the debit) every idempotency key is still debited at most once.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from knai import (
    AsyncKNAIProvider,
    ChargeResult,
    InsufficientBalanceError,
    KNAIError,
    KNAIProvider,
)
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, RunningSandbox, SandboxAdmin
from knai.testing.pytest_plugin import quick_retries

SLUG, USER, MODEL = DEMO_PROVIDER_SLUG, "crowd", "gpt-4"
START = 20_000
THREADS, PER_THREAD = 8, 25
TASKS, PER_TASK = 200, 2
# Queued before the run, so they strike the first requests while all workers are busy.
OUTAGE: list[dict[str, Any]] = [
    {"status": 503, "times": 2},
    {"drop": "after"},
    {"status": 502},
    {"drop": "after", "times": 2},
    {"drop": "before"},
    {"status": 503, "retry_after": 0},
    {"drop": "after"},
]
OUTAGE_FAULTS = sum(f.get("times", 1) for f in OUTAGE)
# Injected by workers in the middle of the run, alternately.
MID_RUN: list[dict[str, Any]] = [{"drop": "after"}, {"status": 503}]


@dataclass
class Tally:
    """What the clients observed (list.append is atomic, so threads share it as is)."""

    charged: list[ChargeResult] = field(default_factory=list)
    refused: list[tuple[int, InsufficientBalanceError]] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # keys replayed after retries ran out


def amounts(seed: int, count: int, ordinary_first: int) -> list[int]:
    """Mostly small amounts; about 1 in 10 (after the first few) larger than the whole wallet."""
    rng = random.Random(seed)
    return [
        START + rng.randint(1, 500)
        if i >= ordinary_first and rng.random() < 0.1
        else rng.randint(1, 300)
        for i in range(count)
    ]


def settle_key(tally: Tally, amount: int, exc: KNAIError) -> str | None:
    """The key to replay an unknown outcome with; None once a refusal is recorded."""
    if isinstance(exc, InsufficientBalanceError) and not exc.may_have_been_applied:
        tally.refused.append((amount, exc))
        return None
    if not exc.may_have_been_applied or exc.idempotency_key is None:
        raise exc
    tally.settled.append(exc.idempotency_key)
    return exc.idempotency_key


def charge_sync(provider: KNAIProvider, token: str, amount: int, tally: Tally) -> None:
    """Charge once; if the retries run out on an unknown outcome, settle it with its key."""
    key = None
    while True:
        try:
            tally.charged.append(provider.charge(token, amount, MODEL, idempotency_key=key))
            return
        except KNAIError as exc:
            key = settle_key(tally, amount, exc)
            if key is None:
                return


async def charge_async(provider: AsyncKNAIProvider, token: str, amount: int, tally: Tally) -> None:
    """The asyncio twin of `charge_sync`."""
    key = None
    while True:
        try:
            tally.charged.append(await provider.charge(token, amount, MODEL, idempotency_key=key))
            return
        except KNAIError as exc:
            key = settle_key(tally, amount, exc)
            if key is None:
                return


def check_wallet(admin: SandboxAdmin, tally: Tally) -> None:
    """The ledger is exactly the charges seen to succeed; refusals changed nothing."""
    ledger = admin.charges(SLUG, USER)
    seen = {r.charge_id: r for r in tally.charged}
    assert len(seen) == len(tally.charged), "two calls were given the same charge"
    assert {c.charge_id: (c.amount_tokens, c.idempotency_key) for c in ledger} == {
        r.charge_id: (r.amount_tokens, r.meta.idempotency_key) for r in tally.charged
    }
    keys = [c.idempotency_key for c in ledger]
    assert None not in keys
    assert len(set(keys)) == len(keys), "an idempotency key was debited twice"

    final = admin.balance(SLUG, USER)
    assert final == START - sum(c.amount_tokens for c in ledger) >= 0
    running = START
    for applied in ledger:  # each result reports the balance right after its own debit
        running -= applied.amount_tokens
        assert seen[applied.charge_id].remaining_balance == running >= 0

    assert tally.charged, "nothing was charged"
    assert any(amount > START for amount, _ in tally.refused), "no charge exceeded the wallet"
    for amount, refusal in tally.refused:
        assert refusal.status_code == 402
        assert 0 <= refusal.response_body["balance"] < amount


def check_outage(admin: SandboxAdmin, tally: Tally, injected: int) -> None:
    """The faults struck, and retries or replays rode them out."""
    pending = sum(p.remaining for p in admin.faults())
    fired = admin.stats().faults_fired["charge"]
    assert fired + pending == injected
    assert fired >= OUTAGE_FAULTS
    assert any(r.meta.retries for r in tally.charged)
    assert any(r.meta.headers.get("idempotent-replayed") == "true" for r in tally.charged)


def queue_outage(admin: SandboxAdmin) -> None:
    for fault in OUTAGE:
        admin.inject_fault("charge", **fault)


@pytest.fixture
def admin(server: RunningSandbox) -> SandboxAdmin:
    """The admin of the module's served sandbox (tests/conftest.py), reset for this test."""
    return server.admin


@pytest.fixture
def provider(server: RunningSandbox) -> Iterator[KNAIProvider]:
    """The one KNAIProvider the threads share, with quick retries."""
    with KNAIProvider(DEMO_API_KEY, SLUG, server.url) as shared:
        quick_retries(shared)
        yield shared


@pytest.fixture
async def aprovider(server: RunningSandbox) -> AsyncIterator[AsyncKNAIProvider]:
    """The one AsyncKNAIProvider the tasks share, with quick retries."""
    async with AsyncKNAIProvider(DEMO_API_KEY, SLUG, server.url) as shared:
        quick_retries(shared)
        yield shared


@pytest.fixture
def token(admin: SandboxAdmin) -> str:
    """An active session on a fresh wallet of START tokens."""
    admin.create_user(SLUG, USER, balance=START)
    return admin.open_session(SLUG, USER).session_token


def run_threads(
    provider: KNAIProvider, token: str, tally: Tally, mid_run: Callable[[int], object] | None = None
) -> None:
    """THREADS workers charge PER_THREAD times each, started together on one provider."""
    start = threading.Barrier(THREADS, timeout=10)

    def worker(number: int) -> None:
        start.wait()
        for i, amount in enumerate(amounts(number, PER_THREAD, ordinary_first=3)):
            if mid_run is not None and i == PER_THREAD // 2:
                mid_run(number)
            charge_sync(provider, token, amount, tally)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))  # re-raises what a worker raised


async def run_tasks(
    provider: AsyncKNAIProvider,
    token: str,
    tally: Tally,
    mid_run: Callable[[int], object] | None = None,
) -> None:
    """TASKS tasks charge PER_TASK times each, all at once on one provider."""

    async def task(number: int) -> None:
        for i, amount in enumerate(amounts(number, PER_TASK, ordinary_first=1)):
            if mid_run is not None and i == 1 and number % 25 == 0:
                await asyncio.to_thread(mid_run, number)
            await charge_async(provider, token, amount, tally)

    await asyncio.gather(*(task(n) for n in range(TASKS)))


def test_threads_sharing_one_provider_leave_an_exact_ledger(
    provider: KNAIProvider, admin: SandboxAdmin, token: str
) -> None:
    tally = Tally()
    run_threads(provider, token, tally)
    check_wallet(admin, tally)
    assert len(tally.charged) + len(tally.refused) == THREADS * PER_THREAD
    assert tally.settled == []


@pytest.mark.anyio
async def test_tasks_sharing_one_async_provider_leave_an_exact_ledger(
    aprovider: AsyncKNAIProvider, admin: SandboxAdmin, token: str
) -> None:
    tally = Tally()
    await run_tasks(aprovider, token, tally)
    check_wallet(admin, tally)
    assert len(tally.charged) + len(tally.refused) == TASKS * PER_TASK
    assert tally.settled == []


def test_threads_through_an_outage_debit_each_key_at_most_once(
    provider: KNAIProvider, admin: SandboxAdmin, token: str
) -> None:
    queue_outage(admin)
    tally = Tally()
    run_threads(
        provider,
        token,
        tally,
        mid_run=lambda n: admin.inject_fault("charge", **MID_RUN[n % len(MID_RUN)]),
    )
    check_wallet(admin, tally)
    assert len(tally.charged) + len(tally.refused) == THREADS * PER_THREAD
    check_outage(admin, tally, OUTAGE_FAULTS + THREADS)


@pytest.mark.anyio
async def test_tasks_through_an_outage_debit_each_key_at_most_once(
    aprovider: AsyncKNAIProvider, admin: SandboxAdmin, token: str
) -> None:
    queue_outage(admin)
    tally = Tally()
    await run_tasks(
        aprovider,
        token,
        tally,
        mid_run=lambda n: admin.inject_fault("charge", **MID_RUN[n % len(MID_RUN)]),
    )
    check_wallet(admin, tally)
    assert len(tally.charged) + len(tally.refused) == TASKS * PER_TASK
    check_outage(admin, tally, OUTAGE_FAULTS + TASKS // 25)
