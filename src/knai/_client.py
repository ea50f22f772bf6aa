"""`KNAIProvider` and `AsyncKNAIProvider`: thin, typed facades over the transport.

Each public method builds a `Call` (pure, shared), hands it to its transport,
and returns the validated model. The twins differ only in `await`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeGuard

import httpx

from . import _args
from ._errors import KNAIError, SessionWaitTimeoutError
from ._lanes import owned_lanes
from ._retry import RetryPolicy
from ._transport import DEFAULT_TIMEOUT, AsyncTransport, Call, SyncTransport
from ._version import __version__

if TYPE_CHECKING:
    from ._models import ActiveSession, ChargeResult, Session

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = ["AsyncKNAIProvider", "KNAIProvider"]

DEFAULT_MAX_RETRIES = 2
_USER_AGENT = f"knai-provider/{__version__} httpx/{httpx.__version__}"
_STATUS_PATH = "/providers/session/status"
_CHARGE_PATH = "/charge/authorize"


class _SessionWait:
    """The clock of one wait_for_session call (pure: no I/O)."""

    __slots__ = (
        "deadline",
        "interval",
        "last_error",
        "last_status",
        "poll_started",
        "timeout",
        "username",
    )

    def __init__(self, username: str, poll_interval: object, timeout: object) -> None:
        self.username = username
        self.interval, self.timeout = _args.check_poll(poll_interval, timeout)
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self.last_status: str | None = None
        self.last_error: KNAIError | None = None
        self.poll_started = time.monotonic()

    def _expired(self, cause: BaseException | None = None) -> SessionWaitTimeoutError:
        error = SessionWaitTimeoutError(
            f"no active session for provider_username={self.username!r} within"
            f" {self.timeout:g} s (last status: {self.last_status!r})"
        )
        error.__cause__ = cause
        return error

    def check(self) -> None:
        """Start a poll, or raise SessionWaitTimeoutError once the deadline has passed."""
        self.poll_started = time.monotonic()
        if self.deadline is not None and self.poll_started >= self.deadline:
            raise self._expired(self.last_error)

    def failed(self, exc: KNAIError, policy: RetryPolicy) -> None:
        """A poll failed: ride out transient errors until a deadline, else re-raise."""
        if self.deadline is None or not policy.should_retry(exc):
            raise exc
        self.last_error = exc
        wait_at_least = exc.retry_after or 0.0
        if time.monotonic() + wait_at_least >= self.deadline:
            # Past the deadline, or the server asks us to come back after it.
            raise self._expired(exc) from exc

    def seen(self, session: Session) -> TypeGuard[ActiveSession]:
        # Parsing gives an ActiveSession exactly when the status is active.
        self.last_status = session.get("status")  # as sent, even one the SDK does not know
        self.last_error = None
        return session.is_active

    def pause(self) -> float:
        """Seconds to sleep before the next poll: never past the deadline.

        Polls start every `poll_interval` (the request's own time is not added
        to it); a server's Retry-After on a failure being ridden out outranks it.
        """
        now = time.monotonic()
        pause = self.interval - (now - self.poll_started)
        if self.last_error is not None:
            pause = max(pause, self.last_error.retry_after or 0.0)
        if self.deadline is not None:
            pause = min(pause, self.deadline - now)
        return max(0.0, pause)


class _BaseProvider:
    """Configuration and request building shared by both clients."""

    def __init__(
        self,
        provider_api_key: str | None,
        provider_slug: str | None,
        base_url: str | None,
        *,
        timeout: float | httpx.Timeout,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        api_key = _args.check_token(
            "provider_api_key", _args.from_env(provider_api_key, "provider_api_key", "KNAI_API_KEY")
        )
        slug = _args.check_token(
            "provider_slug", _args.from_env(provider_slug, "provider_slug", "KNAI_PROVIDER_SLUG")
        )
        self.base_url: str = _args.check_base_url(base_url)
        self.provider_slug: str = slug
        self.timeout: httpx.Timeout = _args.check_timeout(timeout)
        self.max_retries: int = _args.check_max_retries(max_retries)
        self._api_key = api_key
        self._headers = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            # Payloads are tiny: ask for them uncompressed (gzip is still undone, boundedly).
            "Accept-Encoding": "identity",
            **_args.check_default_headers(default_headers),
            "Content-Type": "application/json",
            "X-Provider-API-Key": api_key,
            "X-Provider-Slug": slug,
        }
        self._owns_http = True

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(provider_slug={self.provider_slug!r}, base_url={self.base_url!r})"

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = None, max_retries: int | None = None
    ) -> Self:
        """A copy with other defaults that shares this client's connection pool.

        Closing the copy leaves the pool open; close the original when done.

        Example:
            fast = provider.with_options(timeout=2.0, max_retries=0)
        """
        clone = copy.copy(self)
        if timeout is not None:
            clone.timeout = _args.check_timeout(timeout)
        if max_retries is not None:
            clone.max_retries = _args.check_max_retries(max_retries)
        clone._owns_http = False
        return clone

    def _per_call(self, timeout: object, max_retries: object) -> dict[str, Any]:
        return {
            "timeout": self.timeout if timeout is None else _args.check_timeout(timeout),
            "max_retries": self.max_retries
            if max_retries is None
            else _args.check_max_retries(max_retries),
        }

    def _status_call(self, provider_username: str) -> tuple[Call, type[Session]]:
        from ._models import Session  # deferred: see _TransportBase._parse

        call = Call(
            "GET",
            _STATUS_PATH,
            {"provider_username": _args.check_username(provider_username)},
            {},
            secrets=(self._api_key,),
        )
        return call, Session

    def _charge_call(
        self, session_token: str, amount_tokens: int, model: str, idempotency_key: str | None
    ) -> tuple[Call, type[ChargeResult]]:
        from ._models import ChargeResult  # deferred: see _TransportBase._parse

        token = _args.check_token("session_token", session_token)
        body = {
            "amount_tokens": _args.check_amount(amount_tokens),
            "model": _args.check_text("model", model),
        }
        key = _args.check_idempotency_key(idempotency_key)
        call = Call(
            "POST",
            _CHARGE_PATH,
            None,
            {"X-Session-Token": token, "Idempotency-Key": key},
            json.dumps(body, separators=(",", ":")).encode(),
            idempotency_key=key,
            secrets=(self._api_key, token),
        )
        return call, ChargeResult


class KNAIProvider(_BaseProvider):
    """The synchronous KNAI Wallet client for AI providers.

    Waits for a user's wallet session to become active, then charges it per
    use. One instance holds one pooled, keep-alive HTTP client: create it once
    and share it; it is safe to use from several threads.

    Args:
        provider_api_key: Your provider API key (secret). Defaults to the
            `KNAI_API_KEY` environment variable.
        provider_slug: Your provider slug. Defaults to `KNAI_PROVIDER_SLUG`.
        base_url: The API's base URL. Defaults to `KNAI_BASE_URL`, else
            `https://api.conx.ai`. Must be https unless the host is loopback.
        timeout: Per-attempt HTTP timeout: seconds, or an `httpx.Timeout`.
            Default: 30 s to read, 5 s to connect.
        max_retries: Retries of transient failures (connection errors,
            timeouts, 408, 429, 5xx) per call. Default 2; 0 turns retries off.
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
            default_headers=default_headers,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError("http_client must be an httpx.Client (use AsyncKNAIProvider for async)")
        connections = _args.check_max_connections(max_connections, http_client)
        self._owns_http = http_client is None
        http = http_client or httpx.Client(
            timeout=self.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._transport = SyncTransport(http, self.base_url, RetryPolicy(), self._headers)

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
        call, model = self._status_call(provider_username)
        return self._transport.send(call, model, **self._per_call(timeout, max_retries))

    def wait_for_session(
        self, provider_username: str, poll_interval: float = 1.5, *, timeout: float | None = None
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
        call, model = self._status_call(provider_username)
        wait = _SessionWait(provider_username, poll_interval, timeout)
        while True:
            wait.check()
            try:
                session = self._transport.send(
                    call,
                    model,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                    deadline=wait.deadline,
                )
            except KNAIError as exc:
                wait.failed(exc, self._transport.policy)
            else:
                if wait.seen(session):
                    return session
            time.sleep(wait.pause())

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
        call, result_model = self._charge_call(session_token, amount_tokens, model, idempotency_key)
        return self._transport.send(call, result_model, **self._per_call(timeout, max_retries))

    def close(self) -> None:
        """Close the connection pool (unless it was passed in or shared)."""
        if self._owns_http:
            self._transport.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncKNAIProvider(_BaseProvider):
    """The asyncio KNAI Wallet client: `KNAIProvider`'s surface, awaited.

    Use it as `async with AsyncKNAIProvider(...) as provider:` or call
    `await provider.aclose()`; it is never closed behind your back. Share one
    client between tasks: it sends over up to `max_connections` keep-alive
    connections, each opened when first needed, and further calls wait their
    turn (within the pool timeout).

    Args:
        provider_api_key: Your provider API key (secret). Defaults to `KNAI_API_KEY`.
        provider_slug: Your provider slug. Defaults to `KNAI_PROVIDER_SLUG`.
        base_url: The API's base URL. Defaults to `KNAI_BASE_URL`, else
            `https://api.conx.ai`. Must be https unless the host is loopback.
        timeout: Per-attempt HTTP timeout: seconds or an `httpx.Timeout`.
        max_retries: Retries of transient failures per call (default 2).
        http_client: Your own `httpx.AsyncClient`, used as it is (its pool
            limits apply); the SDK does not close it.
        default_headers: Extra headers sent with every request.
        max_connections: Connections the SDK's own pool may open, so requests
            in flight at once (default 100; 1 to 1000). Each is an httpx
            client of one connection (a "lane"), made now and connected when
            first used. Not with `http_client`: set that client's limits instead.

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
            default_headers=default_headers,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError("http_client must be an httpx.AsyncClient (use KNAIProvider for sync)")
        connections = _args.check_max_connections(max_connections, http_client)
        self._owns_http = http_client is None
        http = http_client or owned_lanes(self.timeout, connections)
        self._transport = AsyncTransport(http, self.base_url, RetryPolicy(), self._headers)

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
            The `Session`; it is an `ActiveSession` (narrow with `isinstance`)
            when it can be charged.

        Raises:
            InvalidAPIKeyError: The key or slug was refused.
            APIConnectionError: No response, after the retries.
            ResponseValidationError: The answer was not a session payload.
            KNAIError: Any other error answer.
        """
        call, model = self._status_call(provider_username)
        return await self._transport.send(call, model, **self._per_call(timeout, max_retries))

    async def wait_for_session(
        self, provider_username: str, poll_interval: float = 1.5, *, timeout: float | None = None
    ) -> ActiveSession:
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
            The `ActiveSession`; `session.session_token` (a `str`) charges it.

        Raises:
            SessionWaitTimeoutError: The deadline passed first (also a TimeoutError).
            InvalidAPIKeyError: The key or slug was refused.
            KNAIError: Any other error answer.
        """
        call, model = self._status_call(provider_username)
        wait = _SessionWait(provider_username, poll_interval, timeout)
        while True:
            wait.check()
            try:
                session = await self._transport.send(
                    call,
                    model,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                    deadline=wait.deadline,
                )
            except KNAIError as exc:
                wait.failed(exc, self._transport.policy)
            else:
                if wait.seen(session):
                    return session
            await asyncio.sleep(wait.pause())

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
            APIConnectionError: No response after the retries; check
                `exc.may_have_been_applied` and replay with `exc.idempotency_key`.
            InvalidAPIKeyError: The key or slug was refused.
            KNAIError: Any other error answer.
        """
        call, result_model = self._charge_call(session_token, amount_tokens, model, idempotency_key)
        return await self._transport.send(
            call, result_model, **self._per_call(timeout, max_retries)
        )

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in or shared)."""
        if self._owns_http:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
