"""A `KNAIProvider` used before a fork (gunicorn's ``--preload``) is safe in the child.

The child gets a pool of its own on its first request, so it never writes on
the parent's keep-alive sockets; the parent's pool is left untouched, in the
child and in the parent. Checked against the sandbox over loopback: the
child's exit status, the ledger, and the parent's connection afterwards.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from knai import KNAIProvider
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, DEMO_USERNAME, RunningSandbox

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")


def run_in_child(body: object) -> int:
    """Fork; the child runs `body()` and exits 0 when it returns True, else 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = 0 if body() else 1  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_charges_on_a_fresh_pool_and_the_parents_still_works(
    knai_provider: KNAIProvider, knai_sandbox_server: RunningSandbox
) -> None:
    admin = knai_sandbox_server.admin
    token = admin.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token
    knai_provider.charge(token, 10, "gpt-4", idempotency_key="parent-1")  # a kept-alive socket
    parents_pool = knai_provider._driver.http

    def child() -> bool:
        result = knai_provider.charge(token, 20, "gpt-4", idempotency_key="child-1")
        # Its own pool, not the parent's (whose sockets the parent still reads).
        return result.amount_tokens == 20 and knai_provider._driver.http is not parents_pool

    assert run_in_child(child) == 0
    # The parent's pool was neither replaced nor closed by the child.
    assert knai_provider._driver.http is parents_pool
    assert not parents_pool.is_closed
    knai_provider.charge(token, 30, "gpt-4", idempotency_key="parent-2")
    charges = admin.charges(DEMO_PROVIDER_SLUG, DEMO_USERNAME)
    assert sorted((c.idempotency_key, c.amount_tokens) for c in charges) == [
        ("child-1", 20),
        ("parent-1", 10),
        ("parent-2", 30),
    ]


def test_a_client_of_your_own_is_yours_across_fork(knai_sandbox_server: RunningSandbox) -> None:
    """The SDK cannot rebuild a client it was handed: the child keeps using it, as before."""
    import httpx

    admin = knai_sandbox_server.admin
    token = admin.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token
    with httpx.Client() as mine:
        provider = KNAIProvider(
            DEMO_API_KEY, DEMO_PROVIDER_SLUG, knai_sandbox_server.url, http_client=mine
        )

        def child() -> bool:
            provider.charge(token, 5, "gpt-4", idempotency_key="own-client")
            return provider._driver.http is mine

        assert run_in_child(child) == 0
    keys = [c.idempotency_key for c in admin.charges(DEMO_PROVIDER_SLUG, DEMO_USERNAME)]
    assert keys == ["own-client"]


def test_parent_and_child_charging_at_once_each_get_their_own_answer(
    knai_provider: KNAIProvider, knai_sandbox_server: RunningSandbox
) -> None:
    """Both charges in flight together (each answered after a delay): on one shared
    socket the answers would cross; on separate pools each side reads its own."""

    admin = knai_sandbox_server.admin
    token = admin.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token
    knai_provider.charge(token, 10, "gpt-4", idempotency_key="parent-1")  # a kept-alive socket
    admin.inject_fault("charge", delay=0.4, times=2)

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            time.sleep(0.1)  # while the parent's charge is in flight
            result = knai_provider.charge(token, 20, "gpt-4", idempotency_key="child-1")
            code = 0 if result.amount_tokens == 20 else 1
        finally:
            os._exit(code)
    mine = knai_provider.charge(token, 30, "gpt-4", idempotency_key="parent-2")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mine.amount_tokens == 30
    charges = admin.charges(DEMO_PROVIDER_SLUG, DEMO_USERNAME)
    assert sorted((c.idempotency_key, c.amount_tokens) for c in charges) == [
        ("child-1", 20),
        ("parent-1", 10),
        ("parent-2", 30),
    ]
