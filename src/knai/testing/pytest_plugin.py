"""pytest fixtures for testing a provider integration against the sandbox wallet.

Registered through the `pytest11` entry point when knai-provider is installed;
nothing is imported until a test asks for a fixture, and the sandbox needs
the `sandbox` extra (starlette, uvicorn).

- ``knai_sandbox``: a fresh in-process ``Sandbox`` (demo provider and the
  ``demo-user`` wallet seeded); ``knai_sandbox.admin`` sets up and inspects it.
- ``knai_sandbox_server``: that wallet served on a loopback port
  (``RunningSandbox``: ``.url``, ``.admin``, ``.ledger``).
- ``knai_provider``: a ``KNAIProvider`` for the demo provider, bound to
  ``knai_sandbox_server`` over a real socket.
- ``knai_async_provider``: its ``AsyncKNAIProvider`` twin (an async fixture:
  run the test under ``@pytest.mark.anyio`` or pytest-asyncio).

The providers' retry pauses are shortened to milliseconds so a test that
rehearses outages stays fast; a ``Retry-After`` the sandbox sends is still
honoured.

    def test_charge(knai_provider, knai_sandbox_server):
        admin = knai_sandbox_server.admin
        token = admin.open_session("demo-provider", "demo-user").session_token
        result = knai_provider.charge(token, 100, "gpt-4")
        assert admin.balance("demo-provider", "demo-user") == result.remaining_balance
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from knai import AsyncKNAIProvider, KNAIProvider
    from knai.testing import RunningSandbox, Sandbox


def quick_retries(provider: KNAIProvider | AsyncKNAIProvider, backoff: float = 0.005) -> None:
    """Shorten a provider's retry backoff to `backoff` seconds, growing to 4x (tests only).

    A `Retry-After` the server sends is still honoured. The same as passing
    `retry=RetryPolicy(initial_backoff=backoff, max_backoff=4 * backoff)`.
    """
    provider.retry = replace(provider.retry, initial_backoff=backoff, max_backoff=4 * backoff)


@pytest.fixture
def knai_sandbox() -> Iterator[Sandbox]:
    """A fresh in-process sandbox wallet, closed after the test."""
    from knai.testing import Sandbox

    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def knai_sandbox_server(knai_sandbox: Sandbox) -> Iterator[RunningSandbox]:
    """The ``knai_sandbox`` wallet served over a loopback socket for the test."""
    with knai_sandbox.serve() as running:
        yield running


@pytest.fixture
def knai_provider(knai_sandbox_server: RunningSandbox) -> Iterator[KNAIProvider]:
    """A ``KNAIProvider`` for the demo provider, talking to ``knai_sandbox_server``."""
    from knai import KNAIProvider
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG

    with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, knai_sandbox_server.url) as provider:
        quick_retries(provider)
        yield provider


@pytest.fixture
async def knai_async_provider(
    knai_sandbox_server: RunningSandbox,
) -> AsyncIterator[AsyncKNAIProvider]:
    """An ``AsyncKNAIProvider`` for the demo provider, talking to ``knai_sandbox_server``."""
    from knai import AsyncKNAIProvider
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG

    async with AsyncKNAIProvider(
        DEMO_API_KEY, DEMO_PROVIDER_SLUG, knai_sandbox_server.url
    ) as provider:
        quick_retries(provider)
        yield provider
