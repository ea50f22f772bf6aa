"""`KNAIProvider` and `AsyncKNAIProvider`: thin, typed facades over the call core.

Each public method builds a `Call` (pure, shared), hands the core's steps for
it to its driver, and returns the validated model. The twins differ only in
`await`; tests/test_docstrings.py proves their docstrings agree.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from . import _args
from ._constants import DEFAULT_MAX_RETRIES, DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT
from ._lanes import LaneClient
from ._provider import BaseProvider
from ._retry import RetryPolicy
from ._transport import AsyncDriver, SyncDriver

if TYPE_CHECKING:
    from ._models import ChargeResult, Session

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = ["AsyncKNAIProvider", "KNAIProvider"]


class KNAIProvider(BaseProvider):
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

    def __init__(
        self,
        provider_api_key: str | None = None,
        provider_slug: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(
            provider_api_key,
            provider_slug,
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry=retry,
            default_headers=default_headers,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError("http_client must be an httpx.Client (use AsyncKNAIProvider for async)")
        connections = _args.check_max_connections(max_connections, http_client)
        self._owns_http = http_client is None
        http = http_client or httpx.Client(
            timeout=self.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._driver = SyncDriver(http, self.base_url, self._headers)
        if self._owns_http:
            # A client never closed (0.1.0's README example) closes its pool when
            # collected, so no socket outlives it with a ResourceWarning. Tied to
            # the driver, which the copies from with_options share.
            weakref.finalize(self._driver, http.close)

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
            The `Session`; `session.is_active` tells whether it can be charged.

        Raises:
            InvalidAPIKeyError: The key or slug was refused.
            APIConnectionError: No response, after the retries.
            ResponseValidationError: The answer was not a session payload.
            KNAIError: Any other error answer.
        """
        return self._driver.run(self._get(provider_username, timeout, max_retries))

    def wait_for_session(
        self,
        provider_username: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        timeout: float | None = None,
    ) -> Session:
        """Poll until the user's session is active, and return it.

        Without a timeout this waits as long as it takes (as 0.1.0 did), and an
        error answer is raised once the client's retries are spent. With a
        timeout, transient failures are ridden out until the deadline.

        Args:
            provider_username: The wallet user's name on your platform.
            poll_interval: Seconds between polls (default 1.5).
            timeout: Give up after this many seconds (default: never).

        Returns:
            The active `Session`; `session["session_token"]` charges it.

        Raises:
            SessionWaitTimeoutError: The deadline passed first (also a TimeoutError).
            InvalidAPIKeyError: The key or slug was refused.
            KNAIError: Any other error answer.
        """
        return self._driver.run(self._wait(provider_username, poll_interval, timeout))

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
        steps = self._charge(
            session_token, amount_tokens, model, idempotency_key, timeout, max_retries
        )
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


class AsyncKNAIProvider(BaseProvider):
    """The asyncio KNAI Wallet client: `KNAIProvider`'s surface, awaited.

    Use it as `async with AsyncKNAIProvider(...) as provider:` or call
    `await provider.aclose()`; it is never closed behind your back. Share one
    client between tasks, and between event loops (each `asyncio.run`, a
    Celery task): each loop gets connections of its own, up to
    `max_connections` keep-alive connections, opened when first needed;
    further calls wait their turn (within the pool timeout).

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
        http_client: Your own `httpx.AsyncClient`, used as it is (its pool
            limits apply); the SDK does not close it.
        default_headers: Extra headers sent with every request.
        max_connections: Connections the SDK's own pool may open, so requests
            in flight at once (default 100, kept alive; 1 to 1000). Each is a
            "lane" of one connection, made when first needed. Not with
            `http_client`: set that client's limits instead.

    Raises:
        ValueError: An argument is missing or malformed.

    Example:
        async with AsyncKNAIProvider() as provider:
            session = await provider.wait_for_session("user123", timeout=300)
            await provider.charge(session.session_token, 1500, "gpt-4")
    """

    def __init__(
        self,
        provider_api_key: str | None = None,
        provider_slug: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(
            provider_api_key,
            provider_slug,
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry=retry,
            default_headers=default_headers,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("http_client must be an httpx.AsyncClient (use KNAIProvider for sync)")
        connections = _args.check_max_connections(max_connections, http_client)
        self._owns_http = http_client is None
        http = http_client or LaneClient(size=connections, timeout=self.timeout)
        self._driver = AsyncDriver(http, self.base_url, self._headers)

    async def get_session(
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
            The `Session`; `session.is_active` tells whether it can be charged.

        Raises:
            InvalidAPIKeyError: The key or slug was refused.
            APIConnectionError: No response, after the retries.
            ResponseValidationError: The answer was not a session payload.
            KNAIError: Any other error answer.
        """
        return await self._driver.run(self._get(provider_username, timeout, max_retries))

    async def wait_for_session(
        self,
        provider_username: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        timeout: float | None = None,
    ) -> Session:
        """Poll until the user's session is active, and return it.

        Without a timeout this waits as long as it takes (as 0.1.0 did), and an
        error answer is raised once the client's retries are spent. With a
        timeout, transient failures are ridden out until the deadline.
        Cancelling the awaiting task stops the wait at once, mid-sleep or
        mid-request, and leaves no request behind.

        Args:
            provider_username: The wallet user's name on your platform.
            poll_interval: Seconds between polls (default 1.5).
            timeout: Give up after this many seconds (default: never).

        Returns:
            The active `Session`; `session["session_token"]` charges it.

        Raises:
            SessionWaitTimeoutError: The deadline passed first (also a TimeoutError).
            InvalidAPIKeyError: The key or slug was refused.
            KNAIError: Any other error answer.
        """
        return await self._driver.run(self._wait(provider_username, poll_interval, timeout))

    async def charge(
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
        steps = self._charge(
            session_token, amount_tokens, model, idempotency_key, timeout, max_retries
        )
        del session_token  # error trackers record frame locals: no token in this frame
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
