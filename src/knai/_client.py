"""`KNAIProvider` and `AsyncKNAIProvider`: thin, typed facades over the call core.

Each public method builds a `Call` (pure, shared), hands the core's steps for
it to its driver, and returns the validated model. The twins differ only in
`await`, and the async methods take their docstrings from the sync ones.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import httpx

from ._constants import DEFAULT_POLL_INTERVAL
from ._lanes import LaneClient
from ._provider import BaseProvider
from ._transport import AsyncDriver, SyncDriver

if TYPE_CHECKING:
    from ._models import ActiveSession, ChargeResult, Session

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = ["AsyncKNAIProvider", "KNAIProvider"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
CANCELLING = """
        Cancelling the awaiting task stops the wait at once, mid-sleep or
        mid-request, and leaves no request behind."""


def _twin_of(
    twin: Callable[Concatenate[Any, _P], _R], extra: str = ""
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[Concatenate[Any, _P], Awaitable[_R]]]:
    """Make an async method the twin of a sync one: its signature and docstring (+ `extra`).

    One source for both: type checkers see the sync method's parameters,
    `inspect.signature` and `help()` show them, and the docstrings cannot drift.
    """

    def twinned(method: Callable[..., Awaitable[Any]]) -> Any:
        functools.update_wrapper(method, twin)
        if extra:
            # Cleaned first: Python 3.13 strips docstrings' indentation at compile time.
            doc = inspect.cleandoc(twin.__doc__ or "")
            summary, sep, rest = doc.partition("\n\nArgs:")
            method.__doc__ = summary + "\n" + inspect.cleandoc(extra) + sep + rest
        return method

    return twinned


class KNAIProvider(BaseProvider[httpx.Client]):
    """The synchronous KNAI Wallet client for AI providers.

    Waits for a user's wallet session to become active, then charges it per
    use. One instance holds one pooled, keep-alive HTTP client: create it once
    and share it; it is safe to use from several threads. A client that is
    never closed closes its pool when it is garbage-collected.

    Args:
        provider_api_key: Your provider API key (secret). Defaults to the
            `KNAI_API_KEY` environment variable.
        provider_slug: Your provider slug. Defaults to `KNAI_PROVIDER_SLUG`.
        base_url: The API's base URL. Defaults to `KNAI_BASE_URL`, else
            `https://api.conx.ai`. Must be https unless the host is loopback.
        timeout: Per-attempt HTTP timeout: seconds, or an `httpx.Timeout`.
            Default: 30 s to read, 5 s to connect. An unset (None) part has no limit.
        max_retries: Retries of transient failures (connection errors,
            timeouts, 408, 429, 5xx) per call. Default 2; 0 turns retries off.
        retry: How retries pause (`RetryPolicy`: backoff, Retry-After cap,
            jitter, sleep and clock). Default: `RetryPolicy()`.
        http_client: Your own `httpx.Client` (proxies, TLS settings, pool
            limits). The SDK does not close it.
        default_headers: Extra headers sent with every request.
        max_connections: Connections the SDK's own pool may open, so requests
            in flight at once (default 100, kept alive; 1 to 1000). Not with
            `http_client`: set that client's limits instead.

    Raises:
        ValueError: An argument is missing or malformed.

    Example:
        with KNAIProvider(provider_api_key="sk_...", provider_slug="acme") as provider:
            session = provider.wait_for_session("user123", timeout=300)
            provider.charge(session.session_token, amount_tokens=1500, model="gpt-4")
    """

    _http_type = httpx.Client
    _wrong_http = "http_client must be an httpx.Client (use AsyncKNAIProvider for async)"

    def _connect(self, http_client: httpx.Client | None, connections: int) -> None:
        timeout = self.timeout

        def pool() -> httpx.Client:
            return httpx.Client(
                timeout=timeout,
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
            )

        if http_client is not None:
            self._driver = SyncDriver(http_client, self.base_url, self._headers)
        else:
            # Ours: closed when collected, and made anew in a forked child.
            self._driver = SyncDriver(pool(), self.base_url, self._headers, remake=pool)

    def get_session(
        self,
        provider_username: str,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
    ) -> Session:
        """Poll the session status of `provider_username` once.

        Args:
            provider_username: The wallet user's name on your platform.
            timeout: Per-attempt timeout for this call (default: the client's).
            max_retries: Retries for this call (default: the client's).

        Returns:
            The `Session`; it is an `ActiveSession` (narrow with `isinstance`)
            when it can be charged.

        Raises:
            InvalidAPIKeyError: The key or slug was refused.
            APIConnectionError: No response, after the retries.
            ResponseValidationError: The answer was not a session payload.
            KNAIError: Any other error answer.
        """
        return self._driver.run(
            self._get(provider_username, timeout=timeout, max_retries=max_retries)
        )

    def wait_for_session(
        self,
        provider_username: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        timeout: float | None = None,
    ) -> ActiveSession:
        """Poll until the user's session is active, and return it.

        Without a timeout this waits as long as it takes (as 0.1.0 did), and an
        error answer is raised once the client's retries are spent. With a
        timeout, transient failures are ridden out until the deadline.

        Args:
            provider_username: The wallet user's name on your platform.
            poll_interval: Seconds between polls (default 1.5).
            timeout: Give up after this many seconds (default: never).

        Returns:
            The `ActiveSession`; `session.session_token` (a `str`) charges it.

        Raises:
            SessionWaitTimeoutError: The deadline passed first (also a TimeoutError).
            InvalidAPIKeyError: The key or slug was refused.
            KNAIError: Any other error answer.
        """
        return self._driver.run(self._wait(provider_username, poll_interval, timeout=timeout))

    def charge(
        self,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
    ) -> ChargeResult:
        """Charge `amount_tokens` of `model` usage to the session's wallet.

        Every retry of one call carries the same `Idempotency-Key`, so a retried
        charge is applied at most once. Pass your own key (e.g. your request
        id) to make a replay after a crash safe too.

        Args:
            session_token: The active session's token (secret).
            amount_tokens: Tokens to charge: an int >= 1.
            model: The model id the usage was of, e.g. "gpt-4".
            idempotency_key: Up to 255 printable ASCII characters; default: a
                fresh UUID4 (see `result.meta.idempotency_key`).
            timeout: Per-attempt timeout for this call (default: the client's).
            max_retries: Retries for this call (default: the client's).

        Returns:
            The `ChargeResult`; `result.meta` has the request id and retries.

        Raises:
            ValueError: An argument is malformed; nothing was sent.
            InsufficientBalanceError: The wallet refused it for lack of balance.
            SessionExpiredError: The session is expired, revoked or unknown.
            InvalidAPIKeyError: The key or slug was refused.
            APIConnectionError: No response after the retries; check
                `exc.may_have_been_applied` and replay with `exc.idempotency_key`.
            KNAIError: Any other error answer.
        """
        try:
            steps = self._charge(
                session_token,
                amount_tokens,
                model,
                idempotency_key=idempotency_key,
                timeout=timeout,
                max_retries=max_retries,
            )
        finally:
            del session_token  # error trackers record frame locals: no token in this frame
        return self._driver.run(steps)

    def close(self) -> None:
        """Close the connection pool (unless it was passed in or shared)."""
        if self._owns_http:
            self._driver.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncKNAIProvider(BaseProvider[httpx.AsyncClient]):
    """The asyncio KNAI Wallet client: `KNAIProvider`'s surface, awaited.

    Use it as `async with AsyncKNAIProvider(...) as provider:` or call
    `await provider.aclose()`; it is never closed behind your back. Share one
    client between tasks, and between event loops (each `asyncio.run`, a
    Celery task): each loop gets connections of its own, up to
    `max_connections` keep-alive connections, opened when first needed;
    further calls wait their turn (within the pool timeout).

    Args:
        (all others): As for `KNAIProvider`.
        http_client: Your own `httpx.AsyncClient`, used as it is (its pool
            limits apply); the SDK does not close it.
        max_connections: Connections the SDK's own pool may open per event
            loop, so requests in flight at once (default 100, kept alive; 1 to
            1000). Each is a "lane" of one connection, made when first needed.
            Not with `http_client`: set that client's limits instead.

    Raises:
        ValueError: An argument is missing or malformed.

    Example:
        async with AsyncKNAIProvider() as provider:
            session = await provider.wait_for_session("user123", timeout=300)
            await provider.charge(session.session_token, 1500, "gpt-4")
    """

    _http_type = httpx.AsyncClient
    _wrong_http = "http_client must be an httpx.AsyncClient (use KNAIProvider for sync)"

    def _connect(self, http_client: httpx.AsyncClient | None, connections: int) -> None:
        http = http_client or LaneClient(size=connections, timeout=self.timeout)
        self._driver = AsyncDriver(http, self.base_url, self._headers)

    @_twin_of(KNAIProvider.get_session)
    async def get_session(self, *args: Any, **kwargs: Any) -> Any:
        return await self._driver.run(self._get(*args, **kwargs))

    @_twin_of(KNAIProvider.wait_for_session, CANCELLING)
    async def wait_for_session(self, *args: Any, **kwargs: Any) -> Any:
        return await self._driver.run(self._wait(*args, **kwargs))

    @_twin_of(KNAIProvider.charge)
    async def charge(self, *args: Any, **kwargs: Any) -> Any:
        try:
            steps = self._charge(*args, **kwargs)
        finally:
            del args, kwargs  # error trackers record frame locals: no token in this frame
        return await self._driver.run(steps)

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in or shared)."""
        if self._owns_http:
            await self._driver.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
