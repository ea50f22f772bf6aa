"""Fixtures of the reliability tests: clients with quick, recorded retry pauses; rogue servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from knai import AsyncKNAIProvider, KNAIProvider, RetryPolicy
from tests._twin import Twin
from tests.conftest import API_KEY, SLUG
from tests.reliability._rogue import Action, RogueServer

# The policy of knai.testing.pytest_plugin.quick_retries: pauses of milliseconds.
QUICK_BACKOFF = {"initial_backoff": 0.005, "max_backoff": 0.02}


class Clients:
    """Makes providers of one flavour with quick retries; every pause is slept and recorded."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.sleeps: list[float] = []
        self._made: list[Twin] = []
        self._http: list[httpx.Client | httpx.AsyncClient] = []

    @property
    def is_async(self) -> bool:
        return self.flavour == "async"

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)

    async def _asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)

    def make(self, base_url: str, **options: Any) -> Twin:
        """A provider for `base_url` with the test credentials unless `options` say otherwise."""
        options.setdefault("provider_api_key", API_KEY)
        options.setdefault("provider_slug", SLUG)
        cls = AsyncKNAIProvider if self.is_async else KNAIProvider
        options.setdefault(
            "retry", RetryPolicy(**QUICK_BACKOFF, sleep=self._sleep, asleep=self._asleep)
        )
        provider = cls(base_url=base_url, **options)
        twin = Twin(provider)
        self._made.append(twin)
        return twin

    def closing(self, http: httpx.Client | httpx.AsyncClient) -> None:
        """Close `http` (a test's own httpx client) with the providers."""
        self._http.append(http)

    async def aclose(self) -> None:
        for twin in self._made:
            await twin.close()
        for http in self._http:
            await http.aclose() if isinstance(http, httpx.AsyncClient) else http.close()


@pytest.fixture(params=["sync", "async"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[Clients]:
    made = Clients(request.param)
    yield made
    await made.aclose()


@pytest.fixture
def rogue_factory() -> Iterator[Callable[..., RogueServer]]:
    """Starts `RogueServer(*actions)` servers on loopback; stops them all after the test."""
    servers: list[RogueServer] = []

    def start(*actions: Action) -> RogueServer:
        server = RogueServer(*actions).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
