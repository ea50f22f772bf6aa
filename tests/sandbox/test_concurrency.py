"""Many charges at once on one wallet: the balance stays exact and never goes negative.

Threads and asyncio tasks, through the in-process transports and over real
sockets. The wallet starts with less than the total asked for, so some charges
must be refused; those must change nothing.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from knai.testing import DEMO_PROVIDER_SLUG, Ledger, RunningSandbox, Sandbox

from .conftest import CHARGE_PATH, charge_headers

SLUG = DEMO_PROVIDER_SLUG
USER = "crowd"
START_BALANCE = 2_000
THREADS, PER_THREAD = 8, 20
TASKS = 200
# The crowd's clients wait as long as it takes: these tests prove the ledger exact, not
# fast. 200 tasks share httpx's 100 connections, and on a loaded machine (xdist workers,
# Python 3.10's slower event loop) the last ones wait past httpx's default 5 s pool timeout.
CROWD_TIMEOUT = httpx.Timeout(60.0)


@dataclass
class Outcome:
    """What the clients saw: amounts charged, 402 bodies, anything else."""

    charged: list[int] = field(default_factory=list)
    refused: list[tuple[int, int]] = field(default_factory=list)  # (amount, balance reported)
    other: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, amount: int, response: httpx.Response) -> None:
        with self.lock:
            if response.status_code == 200:
                self.charged.append(amount)
            elif response.status_code == 402:
                self.refused.append((amount, response.json()["balance"]))
            else:
                self.other.append(response.status_code)


def _amounts(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(count)]


def _open_crowd_wallet(ledger: Ledger) -> str:
    ledger.add_user(SLUG, USER, balance=START_BALANCE)
    return ledger.open_session(SLUG, USER).session_token


def _check(ledger: Ledger, outcome: Outcome, asked: int) -> None:
    assert outcome.other == []
    assert len(outcome.charged) + len(outcome.refused) == asked
    assert outcome.refused, "the test must overdraw the wallet to prove refusals"
    final = ledger.balance(SLUG, USER)
    assert final == START_BALANCE - sum(outcome.charged)
    assert final >= 0
    assert sorted(c.amount_tokens for c in ledger.charges(SLUG, USER)) == sorted(outcome.charged)
    # A refusal reported a real balance that could not cover the amount asked.
    assert all(0 <= balance < amount for amount, balance in outcome.refused)


def _charge_from_threads(make_client: Callable[[], httpx.Client], token: str) -> Outcome:
    outcome = Outcome()
    barrier = threading.Barrier(THREADS)

    def worker(seed: int) -> None:
        with make_client() as client:
            barrier.wait()
            for amount in _amounts(PER_THREAD, seed):
                body = {"amount_tokens": amount, "model": "gpt-4"}
                outcome.record(
                    amount, client.post(CHARGE_PATH, json=body, headers=charge_headers(token))
                )

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


async def _charge_from_tasks(client: httpx.AsyncClient, token: str) -> Outcome:
    outcome = Outcome()

    async def one(amount: int) -> None:
        body = {"amount_tokens": amount, "model": "gpt-4"}
        outcome.record(
            amount, await client.post(CHARGE_PATH, json=body, headers=charge_headers(token))
        )

    await asyncio.gather(*(one(amount) for amount in _amounts(TASKS, seed=99)))
    return outcome


def _socket_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, trust_env=False, timeout=CROWD_TIMEOUT)


@pytest.fixture
def crowd() -> Iterator[tuple[Sandbox, str]]:
    with Sandbox() as sb:
        yield sb, _open_crowd_wallet(sb.ledger)


def test_threads_charging_in_process_keep_the_balance_exact(crowd: tuple[Sandbox, str]) -> None:
    sb, token = crowd
    transport = sb.transport()  # one transport (one loop thread) shared by all threads
    outcome = _charge_from_threads(
        lambda: httpx.Client(base_url=sb.url, transport=_Unclosed(transport)), token
    )
    transport.close()
    _check(sb.ledger, outcome, THREADS * PER_THREAD)


@pytest.mark.anyio
async def test_asyncio_tasks_charging_in_process_keep_the_balance_exact(
    crowd: tuple[Sandbox, str],
) -> None:
    sb, token = crowd
    async with httpx.AsyncClient(base_url=sb.url, transport=sb.async_transport()) as client:
        outcome = await _charge_from_tasks(client, token)
    _check(sb.ledger, outcome, TASKS)


def test_threads_charging_over_sockets_keep_the_balance_exact(server: RunningSandbox) -> None:
    token = _open_crowd_wallet(server.ledger)
    outcome = _charge_from_threads(
        lambda: httpx.Client(base_url=server.url, trust_env=False, timeout=CROWD_TIMEOUT), token
    )
    _check(server.ledger, outcome, THREADS * PER_THREAD)


@pytest.mark.anyio
async def test_asyncio_tasks_charging_over_sockets_keep_the_balance_exact(
    server: RunningSandbox,
) -> None:
    token = _open_crowd_wallet(server.ledger)
    async with _socket_client(server.url) as client:
        outcome = await _charge_from_tasks(client, token)
    _check(server.ledger, outcome, TASKS)


@pytest.mark.anyio
async def test_concurrent_retries_with_one_idempotency_key_debit_once(
    server: RunningSandbox,
) -> None:
    token = _open_crowd_wallet(server.ledger)
    headers = charge_headers(token, idempotency_key="same-order")
    body = {"amount_tokens": 25, "model": "gpt-4"}
    async with _socket_client(server.url) as client:
        responses = await asyncio.gather(
            *(client.post(CHARGE_PATH, json=body, headers=headers) for _ in range(50))
        )

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["charge_id"] for r in responses}) == 1
    assert server.ledger.balance(SLUG, USER) == START_BALANCE - 25


class _Unclosed(httpx.BaseTransport):
    """Share one transport between clients; closing a client leaves it open."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(request)


def test_threads_and_event_loops_charging_one_ledger_at_once_keep_it_exact(
    sandbox: Sandbox,
) -> None:
    """Direct ledger calls from threads, a served socket and the in-process transport, together.

    A tiny thread switch interval makes the interpreter preempt inside the
    ledger as often as it can, so a missing lock would show.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    token = _open_crowd_wallet(sandbox.ledger)
    outcome = Outcome()
    ledger = sandbox.ledger

    def direct(seed: int) -> None:
        for amount in _amounts(50, seed):
            reply = ledger.authorize_charge(SLUG, token, amount, "gpt-4")
            outcome.record(amount, httpx.Response(reply.status, json=dict(reply.body)))

    def in_process() -> None:
        with httpx.Client(base_url=sandbox.url, transport=sandbox.transport()) as client:
            for amount in _amounts(50, 7):
                body = {"amount_tokens": amount, "model": "gpt-4"}
                outcome.record(
                    amount, client.post(CHARGE_PATH, json=body, headers=charge_headers(token))
                )

    try:
        with sandbox.serve() as running:

            async def served() -> None:
                async with _socket_client(running.url) as client:
                    merged = await _charge_from_tasks(client, token)
                with outcome.lock:
                    outcome.charged += merged.charged
                    outcome.refused += merged.refused
                    outcome.other += merged.other

            workers = [threading.Thread(target=direct, args=(seed,)) for seed in range(4)]
            workers.append(threading.Thread(target=in_process))
            workers.append(threading.Thread(target=asyncio.run, args=(served(),)))
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
    finally:
        sys.setswitchinterval(previous)

    _check(ledger, outcome, 4 * 50 + 50 + TASKS)
