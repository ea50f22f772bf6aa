"""Both clients behind one awaitable surface, so each behaviour is proved sync and async.

The one wrapper of the suite: the respx tests (tests/conftest.py's `twins`), the
reliability tests (`Clients`) and the end-to-end tests all drive `Twin`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import respx

from knai import AsyncKNAIProvider, ChargeResult, KNAIProvider, Session
from tests.conftest import API_KEY, SLUG, TOKEN, recording

STATUS = "/providers/session/status"
CHARGE = "/charge/authorize"
ACTIVE = {"status": "active", "session_token": TOKEN, "session_id": "ses_1"}
PENDING = {"status": "pending"}
CHARGED = {"charge_id": "ch_1", "status": "succeeded", "amount_tokens": 1500, "model": "gpt-4"}


def reply(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A canned answer; `body` is sent as JSON unless it is bytes."""
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, json={} if body is None else body, headers=headers)


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


# Each failure once, as respx side effects: httpx exceptions or canned answers.
FAILURES: dict[str, Any] = {
    "ConnectError": httpx.ConnectError,
    "ConnectTimeout": httpx.ConnectTimeout,
    "ReadTimeout": httpx.ReadTimeout,
    "WriteTimeout": httpx.WriteTimeout,
    "RemoteProtocolError": httpx.RemoteProtocolError,
    **{str(s): reply(s, {"error": f"failed with {s}"}) for s in (401, 402, 408, 429)},
    **{str(s): reply(s, {"error": f"failed with {s}"}) for s in (500, 502, 503, 504)},
}


def always(route: respx.Route, failure: str) -> respx.Route:
    """Make `route` fail the same way on every request."""
    effect = FAILURES[failure]
    if isinstance(effect, httpx.Response):
        return route.mock(return_value=effect)
    return route.mock(side_effect=effect)


class Twin:
    """A KNAIProvider or an AsyncKNAIProvider, every call awaited the same way."""

    def __init__(self, provider: KNAIProvider | AsyncKNAIProvider) -> None:
        self.provider = provider
        self.is_async = isinstance(provider, AsyncKNAIProvider)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.provider, name)(*args, **kwargs)
        return await result if self.is_async else result

    async def get_session(self, *args: Any, **kwargs: Any) -> Session:
        return await self._call("get_session", *args, **kwargs)

    async def wait_for_session(self, *args: Any, **kwargs: Any) -> Session:
        return await self._call("wait_for_session", *args, **kwargs)

    async def charge(self, *args: Any, **kwargs: Any) -> ChargeResult:
        return await self._call("charge", *args, **kwargs)

    async def close(self) -> None:
        await self._call("aclose" if self.is_async else "close")

    def with_options(self, **options: Any) -> Twin:
        return Twin(self.provider.with_options(**options))


Retries = Callable[[KNAIProvider | AsyncKNAIProvider], None]


class Twins:
    """Makes providers of one flavour, `retries` applied to each; closes them all at the end.

    By default retry pauses are recorded in `sleeps` instead of slept. `defaults` are
    options every provider gets unless `make` says otherwise (e.g. a sandbox's base_url).
    """

    def __init__(
        self,
        flavour: str,
        sleeps: list[float],
        retries: Retries | None = None,
        **defaults: Any,
    ) -> None:
        self.flavour = flavour
        self.sleeps = sleeps
        self.retries = retries
        self.defaults = {"provider_api_key": API_KEY, "provider_slug": SLUG, **defaults}
        self._made: list[Twin] = []

    @property
    def is_async(self) -> bool:
        return self.flavour == "async"

    def make(self, **options: Any) -> Twin:
        """A provider with `defaults` (the test credentials) unless `options` say otherwise.

        An option of None stands for "not given": the provider reads it from the environment.
        Without a `retries` hook, retry pauses are recorded in `sleeps` instead of slept.
        """
        options = {**self.defaults, **options}
        if self.retries is None:
            options.setdefault("retry", recording(self.sleeps))
        cls = AsyncKNAIProvider if self.is_async else KNAIProvider
        provider = cls(**options)
        if self.retries is not None:
            self.retries(provider)
        twin = Twin(provider)
        self._made.append(twin)
        return twin

    def http_client(self, **options: Any) -> httpx.Client | httpx.AsyncClient:
        """A user's own httpx client of the matching flavour (the caller closes it)."""
        return httpx.AsyncClient(**options) if self.is_async else httpx.Client(**options)

    async def aclose(self) -> None:
        for twin in self._made:
            await twin.close()


async def charge(twin: Twin, **options: Any) -> ChargeResult:
    """The protocol's example charge: 1500 tokens of gpt-4 on the session TOKEN."""
    return await twin.charge(TOKEN, amount_tokens=1500, model="gpt-4", **options)
