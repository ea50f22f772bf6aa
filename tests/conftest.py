"""Shared fixtures: clients bound to respx mocks, with retry pauses recorded instead of slept."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import respx
from hypothesis import settings

from knai import AsyncKNAIProvider, KNAIProvider, RetryPolicy

if TYPE_CHECKING:
    from knai.testing import RunningSandbox
    from tests.support.twin import Twin, Twins

API_KEY = "sk_test_4f9a1c7e2b8d4e6fa0c3"
SLUG = "acme-ai"
BASE_URL = "https://api.conx.ai"
TOKEN = "sess_tok_9b2e4d6f8a0c1e3f"

# pytest-xdist runs several workers at once: no example database for them to share, and no
# run that depends on what an earlier one left in .hypothesis/. A failure prints the blob
# that replays it (@reproduce_failure).
settings.register_profile("knai", database=None, print_blob=True)
settings.load_profile("knai")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): two workers per core, at most 8.

    Most of the suite's wall time is waiting (sockets, timeouts, retry pauses, subprocesses):
    on 2 cores, 4 workers finish in about half the time 2 take. PYTEST_XDIST_AUTO_NUM_WORKERS
    still overrides.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (Linux)
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return min(8, 2 * cores)


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No KNAI_* settings leak in from the shell; no CA bundle is parsed per client.

    No test uses TLS (respx answers, or the sandbox on plain loopback http): an
    empty CA directory saves the ~20 ms loading the system bundle costs each
    new httpx client.
    """
    for variable in ("KNAI_API_KEY", "KNAI_PROVIDER_SLUG", "KNAI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sleeps() -> list[float]:
    """The retry pauses the client asked for, in order (nothing actually sleeps)."""
    return []


def recording(sleeps: list[float], **options: Any) -> RetryPolicy:
    """A retry policy that records each pause in `sleeps` instead of sleeping."""

    async def asleep(seconds: float) -> None:
        sleeps.append(seconds)

    return RetryPolicy(sleep=sleeps.append, asleep=asleep, **options)


class FakeTime:
    """A monotonic clock that moves only when the client sleeps: waits take no real time.

    `policy()` puts it on every seam a client has (clock, sleep, asleep); `sleeps` are
    the pauses asked for, retries' and polls' alike, in order.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def policy(self, **options: Any) -> RetryPolicy:
        return RetryPolicy(clock=self.clock, sleep=self.sleep, asleep=self.asleep, **options)


@pytest.fixture
def fake_time() -> FakeTime:
    """Fake time for one test: pass `fake_time.policy()` as a client's `retry=`."""
    return FakeTime()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """A respx router standing in for the KNAI API; every request must match a route."""
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client(api: respx.MockRouter, sleeps: list[float]) -> Iterator[KNAIProvider]:
    provider = KNAIProvider(provider_api_key=API_KEY, provider_slug=SLUG, retry=recording(sleeps))
    with provider:
        yield provider


@pytest.fixture
async def aclient(api: respx.MockRouter, sleeps: list[float]) -> AsyncIterator[AsyncKNAIProvider]:
    provider = AsyncKNAIProvider(
        provider_api_key=API_KEY, provider_slug=SLUG, retry=recording(sleeps)
    )
    async with provider:
        yield provider


@pytest.fixture(params=["sync", "async"])
async def twins(
    request: pytest.FixtureRequest, api: respx.MockRouter, sleeps: list[float]
) -> AsyncIterator[Twins]:
    """Makers of sync or async clients behind one awaitable surface (each test runs twice)."""
    from tests.support.twin import Twins

    makers = Twins(request.param, sleeps)
    yield makers
    await makers.aclose()


@pytest.fixture
def twin(twins: Twins) -> Twin:
    """A client of the `twins` flavour, bound to `api`."""
    return twins.make()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RunningSandbox]:
    """One served sandbox per test module (starting uvicorn costs ~0.2 s)."""
    from knai.testing import Sandbox

    with Sandbox() as sb, sb.serve() as running:
        yield running


@pytest.fixture
def server(shared_server: RunningSandbox) -> RunningSandbox:
    """The module's served sandbox, reset to the demo seed (no faults, zero counters).

    A request a test left in flight (a delayed fault) cannot touch the next test's
    wallet: the reset forgets its session, so it lands on an unknown token.
    """
    shared_server.ledger.reset()
    return shared_server
