"""Fixtures for the sandbox wallet's own tests: in-process sandboxes, a fake clock.

The served sandbox (`server`, one per module, reset per test) is tests/conftest.py's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from knai.testing import (
    DEMO_API_KEY,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    Ledger,
    Sandbox,
)

PROTOCOL_HEADERS = {
    "X-Provider-API-Key": DEMO_API_KEY,
    "X-Provider-Slug": DEMO_PROVIDER_SLUG,
    "Content-Type": "application/json",
}
STATUS_PATH = "/providers/session/status"
CHARGE_PATH = "/charge/authorize"


def charge_headers(token: str, idempotency_key: str | None = None) -> dict[str, str]:
    """The headers of a charge as PROTOCOL.md spells them."""
    headers = {**PROTOCOL_HEADERS, "X-Session-Token": token}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> Ledger:
    """A demo ledger on a fake clock."""
    return Ledger(demo=True, clock=clock)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def token(sandbox: Sandbox) -> str:
    """The token of an active demo-user session."""
    return sandbox.ledger.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token
