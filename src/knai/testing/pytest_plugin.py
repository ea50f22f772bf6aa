"""pytest fixtures for testing a provider integration against the sandbox wallet.

Registered through the `pytest11` entry point when knai-provider is installed;
nothing is imported until a test asks for a fixture, and the sandbox needs
the `sandbox` extra (starlette, uvicorn): without it every fixture fails with
the `pip install "knai-provider[sandbox]"` line rather than an import traceback.

- ``knai_sandbox``: the demo ``Sandbox`` in this process (demo provider and the
  ``demo-user`` wallet seeded), reset to that state before each test;
  ``knai_sandbox.admin`` sets up and inspects it.
- ``knai_sandbox_server``: that wallet served on a loopback port
  (``RunningSandbox``: ``.url``, ``.admin``, ``.ledger``). One uvicorn server
  serves the whole pytest session; each test starts from a reset ledger (no
  users, sessions, charges, idempotency records or faults of earlier tests).
- ``knai_provider``: a ``KNAIProvider`` for the demo provider, bound to
  ``knai_sandbox_server`` over a real socket.
- ``knai_async_provider``: its ``AsyncKNAIProvider`` twin, opened and closed on
  the test's event loop, under anyio's plugin (``@pytest.mark.anyio``) or
  pytest-asyncio (``@pytest.mark.asyncio``, strict or auto mode).

The providers' retry pauses are shortened to milliseconds so a test that
rehearses outages stays fast; a ``Retry-After`` the sandbox sends is still
honoured. A test that needs a server of its own calls ``knai_sandbox.serve()``.

    def test_charge(knai_provider, knai_sandbox_server):
        admin = knai_sandbox_server.admin
        token = admin.open_session("demo-provider", "demo-user").session_token
        result = knai_provider.charge(token, 100, "gpt-4")
        assert admin.balance("demo-provider", "demo-user") == result.remaining_balance
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from knai import AsyncKNAIProvider, KNAIProvider
    from knai.testing import Ledger, RunningSandbox, Sandbox

try:
    import pytest_asyncio
except ImportError:  # pytest-asyncio is optional: anyio's plugin serves async tests too
    pytest_asyncio = None  # type: ignore[assignment]


def quick_retries(provider: KNAIProvider | AsyncKNAIProvider, backoff: float = 0.005) -> None:
    """Shorten a provider's retry backoff to `backoff` seconds, growing to 4x (tests only).

    A `Retry-After` the server sends is still honoured. The same as passing
    `retry=RetryPolicy(initial_backoff=backoff, max_backoff=4 * backoff)`.
    """
    provider.retry = replace(provider.retry, initial_backoff=backoff, max_backoff=4 * backoff)


def _sandbox_name(fixture: str, name: str) -> Any:
    """``knai.testing.<name>``, or fail the test with the extra to install."""
    import knai.testing

    try:
        return getattr(knai.testing, name)
    except ModuleNotFoundError as exc:
        from knai.testing._extra import missing_extra

        clearer = missing_extra(f"the {fixture} fixture", exc)
        if clearer is None:
            raise
    # Outside the except block, so pytest reports one line, not the import chain.
    pytest.fail(str(clearer), pytrace=False)


@pytest.fixture(scope="session")
def _knai_session_ledger() -> Ledger:
    from knai.testing import Ledger

    return Ledger(demo=True)


@pytest.fixture(scope="session")
def _knai_session_server(_knai_session_ledger: Ledger) -> Iterator[RunningSandbox]:
    # Starting and stopping uvicorn costs ~0.2 s; once per session is enough
    # because every test resets the ledger it serves.
    serve = _sandbox_name("knai_sandbox_server", "serve")
    with serve(_knai_session_ledger) as running:
        yield running


@pytest.fixture
def knai_sandbox(_knai_session_ledger: Ledger) -> Iterator[Sandbox]:
    """The demo sandbox wallet in this process, reset to its starting state for this test."""
    sandbox_class = _sandbox_name("knai_sandbox", "Sandbox")
    _knai_session_ledger.reset()
    with sandbox_class(_knai_session_ledger) as sandbox:
        yield sandbox


@pytest.fixture
def knai_sandbox_server(
    knai_sandbox: Sandbox, request: pytest.FixtureRequest
) -> Iterator[RunningSandbox]:
    """The ``knai_sandbox`` wallet served over loopback (one server for the whole session)."""
    session_ledger = request.getfixturevalue("_knai_session_ledger")
    if knai_sandbox.ledger is session_ledger:
        yield request.getfixturevalue("_knai_session_server")
        return
    # A project that overrides `knai_sandbox` (its own Ledger, a fake clock) gets
    # that wallet served, on a server of its own for the test.
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


@contextlib.asynccontextmanager
async def _async_provider(
    server: RunningSandbox,
) -> AsyncGenerator[AsyncKNAIProvider, None]:
    from knai import AsyncKNAIProvider
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG

    async with AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, server.url) as provider:
        quick_retries(provider)
        yield provider


_NO_ASYNC_RUNNER = (
    "knai_async_provider is an async fixture: run the test under anyio's plugin"
    " (@pytest.mark.anyio) or pytest-asyncio (@pytest.mark.asyncio)"
)


@pytest.fixture
def knai_async_provider(request: pytest.FixtureRequest) -> AsyncKNAIProvider:
    """An ``AsyncKNAIProvider`` for the demo provider, talking to ``knai_sandbox_server``.

    Opened and closed on the test's own event loop, whichever plugin runs it:
    anyio's (``@pytest.mark.anyio``) or pytest-asyncio's (``@pytest.mark.asyncio``).
    """
    # Each plugin only drives the async fixtures it recognises (anyio: those of a
    # test that uses `anyio_backend`; pytest-asyncio in strict mode: those made
    # with `pytest_asyncio.fixture`), so hand the test the twin its runner drives.
    if "anyio_backend" in request.fixturenames:
        provider: AsyncKNAIProvider = request.getfixturevalue("_knai_async_provider_anyio")
        return provider
    if (
        "_knai_async_provider_asyncio" in globals()
        and request.config.pluginmanager.has_plugin("asyncio")
        and request.node.get_closest_marker("asyncio") is not None
    ):
        provider = request.getfixturevalue("_knai_async_provider_asyncio")
        return provider
    pytest.fail(_NO_ASYNC_RUNNER, pytrace=False)


@pytest.fixture
async def _knai_async_provider_anyio(
    knai_sandbox_server: RunningSandbox,
) -> AsyncIterator[AsyncKNAIProvider]:
    async with _async_provider(knai_sandbox_server) as provider:
        yield provider


# pytest_asyncio.fixture appeared in 0.17; an older one simply is not used.
if pytest_asyncio is not None and getattr(pytest_asyncio, "fixture", None) is not None:

    @pytest_asyncio.fixture
    async def _knai_async_provider_asyncio(
        knai_sandbox_server: RunningSandbox,
    ) -> AsyncIterator[AsyncKNAIProvider]:
        async with _async_provider(knai_sandbox_server) as provider:
            yield provider
