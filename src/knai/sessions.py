"""A per-user session cache: ask the wallet about a user once, not on every request.

An API server sees the same user on many requests. `SessionCache` (over a
`KNAIProvider`) and `AsyncSessionCache` (over an `AsyncKNAIProvider`) keep each
user's active session in memory and charge it::

    from knai import KNAIProvider
    from knai.sessions import NoActiveSessionError, SessionCache

    cache = SessionCache(KNAIProvider("sk_...", "acme"))
    try:
        cache.charge("alice", amount_tokens=1500, model="gpt-4")
    except NoActiveSessionError as exc:
        print("ask alice to open a session; last status:", exc.last_status)

How long an answer is kept:

- an active session until the first of: its `expires_at` (when the wallet sends
  one) less `expiry_margin`, or `ttl` seconds after it was fetched;
- "no active session" for `negative_ttl` seconds, so a busy endpoint does not
  poll the wallet on every request of a user who has not paid;
- errors (an unreachable wallet, a refused API key) not at all.

Concurrent `get`s of one user share one status call (threads for the sync
cache, tasks for the async one); a joiner shares the first caller's `wait`.
Cancelling one waiting task never cancels the call the others are waiting on.
At most `max_users` users are kept, the least recently used leave first.
The cache uses only the provider's public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from . import AsyncKNAIProvider, KNAIError, KNAIProvider, SessionExpiredError
from . import SessionWaitTimeoutError as _WaitTimeout
from ._sessions_core import (
    DEFAULT_EXPIRY_MARGIN,
    DEFAULT_MAX_USERS,
    DEFAULT_NEGATIVE_TTL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TTL,
    CacheCore,
    CacheStats,
    NoActiveSessionError,
)

if TYPE_CHECKING:
    from . import ActiveSession, ChargeResult

__all__ = ["AsyncSessionCache", "CacheStats", "NoActiveSessionError", "SessionCache"]

# Tracebacks and reprs name the public home of these two.
CacheStats.__module__ = NoActiveSessionError.__module__ = __name__


class _Flight:
    """One status call that several threads wait on."""

    __slots__ = ("done", "error", "session")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.session: ActiveSession | None = None
        self.error: BaseException | None = None

    def result(self) -> ActiveSession:
        self.done.wait()
        error = self.error
        if isinstance(error, NoActiveSessionError):
            raise NoActiveSessionError(error.provider_username, error.last_status)
        if error is not None:
            raise error
        assert self.session is not None
        return self.session


class SessionCache:
    """Active sessions per user over a `KNAIProvider`, shared by any number of threads.

    Args:
        provider: The client that polls the wallet and charges it.
        ttl: Seconds an active session is served from memory at most (default 300).
        negative_ttl: Seconds a "no active session" answer is kept (default 1; 0: never).
        expiry_margin: Seconds before the session's `expires_at` it stops
            being served (default 30).
        max_users: Users kept at most; the least recently used leave first.
        wait: Seconds a miss waits for the session to become active (default 0).
        poll_interval: Seconds between polls while waiting (default 1.5).
        clock: Monotonic seconds (tests inject a fake one).

    Raises:
        TypeError, ValueError: An argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        provider: KNAIProvider,
        *,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
        max_users: int = DEFAULT_MAX_USERS,
        wait: float = 0.0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Untyped callers pass anything: the annotation is checked at run time.
        if not isinstance(cast(object, provider), KNAIProvider):
            raise TypeError(f"provider must be a KNAIProvider, got {type(provider).__name__}")
        self.provider: KNAIProvider = provider
        self._core = CacheCore(
            ttl, negative_ttl, expiry_margin, max_users, wait, poll_interval, clock
        )
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def get(self, provider_username: str, *, wait: float | None = None) -> ActiveSession:
        """The user's active session, from memory when fresh, else from the wallet.

        Args:
            provider_username: The wallet user's name on your platform.
            wait: Seconds to wait for activation on a miss (default: the cache's).

        Returns:
            The user's `ActiveSession` (its `session_token` is a `str`).

        Raises:
            NoActiveSessionError: The user has no active session (`.last_status`).
            KNAIError: The wallet could not be asked (not cached).
        """
        seconds = self._core.wait_of(wait)
        with self._lock:
            session = self._core.lookup(provider_username, seconds)
            if session is not None:
                return session
            flight = self._flights.get(provider_username)
            if flight is not None:
                leader = False
            else:
                leader, flight = True, _Flight()
                self._flights[provider_username] = flight
        if not leader:
            return flight.result()
        try:
            flight.session = self._fetch(provider_username, seconds, flight)
            return flight.session
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            # KeyboardInterrupt and the like belong to this thread; the others get an error.
            flight.error = KNAIError("the status call this request shared was interrupted")
            raise
        finally:
            with self._lock:
                if self._flights.get(provider_username) is flight:
                    del self._flights[provider_username]
            flight.done.set()

    def charge(
        self,
        provider_username: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
    ) -> ChargeResult:
        """Charge the user's cached session; see `KNAIProvider.charge` for the arguments.

        Raises:
            NoActiveSessionError: The user has no active session.
            SessionExpiredError: The wallet refused the session (403/410); the
                user's entry is dropped, so the next `get` asks the wallet.
            KNAIError: As `KNAIProvider.charge`.
        """
        session = self.get(provider_username)
        try:
            return self.provider.charge(
                session.session_token,
                amount_tokens,
                model,
                idempotency_key=idempotency_key,
            )
        except SessionExpiredError:
            with self._lock:
                self._core.drop(provider_username, session)
            raise

    def invalidate(self, provider_username: str) -> None:
        """Forget the user: the next `get` asks the wallet (a call under way is not kept)."""
        with self._lock:
            self._core.drop(provider_username)
            self._flights.pop(provider_username, None)

    def stats(self) -> CacheStats:
        """Hits, misses and wallet polls so far."""
        with self._lock:
            return self._core.stats()

    def _fetch(self, provider_username: str, wait: float, flight: _Flight) -> ActiveSession:
        with self._lock:
            self._core.polls += 1
        session = self.provider.get_session(provider_username)
        if not session.is_active and wait > 0:
            with self._lock:
                self._core.polls += 1
            # Still not active at the deadline: cached as a "no" with the status first seen.
            with contextlib.suppress(_WaitTimeout):
                session = self.provider.wait_for_session(
                    provider_username, self._core.poll_interval, timeout=wait
                )
        with self._lock:
            keep = self._flights.get(provider_username) is flight
            return self._core.settle(provider_username, session, keep=keep)


class AsyncSessionCache:
    """Active sessions per user over an `AsyncKNAIProvider`, shared by any number of tasks.

    The twin of `SessionCache`, with the same arguments; use it from one event loop.

    Raises:
        TypeError, ValueError: An argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        provider: AsyncKNAIProvider,
        *,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
        max_users: int = DEFAULT_MAX_USERS,
        wait: float = 0.0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Untyped callers pass anything: the annotation is checked at run time.
        if not isinstance(cast(object, provider), AsyncKNAIProvider):
            raise TypeError(f"provider must be an AsyncKNAIProvider, got {type(provider).__name__}")
        self.provider: AsyncKNAIProvider = provider
        self._core = CacheCore(
            ttl, negative_ttl, expiry_margin, max_users, wait, poll_interval, clock
        )
        self._flights: dict[str, asyncio.Task[ActiveSession]] = {}

    async def get(self, provider_username: str, *, wait: float | None = None) -> ActiveSession:
        """The user's active session, from memory when fresh, else from the wallet.

        The status call runs in its own task: cancelling this `get` leaves it
        running for the other callers waiting on it.

        Args:
            provider_username: The wallet user's name on your platform.
            wait: Seconds to wait for activation on a miss (default: the cache's).

        Returns:
            The user's `ActiveSession` (its `session_token` is a `str`).

        Raises:
            NoActiveSessionError: The user has no active session (`.last_status`).
            KNAIError: The wallet could not be asked (not cached).
        """
        seconds = self._core.wait_of(wait)
        session = self._core.lookup(provider_username, seconds)
        if session is not None:
            return session
        task = self._flights.get(provider_username)
        if task is None:
            task = asyncio.ensure_future(self._fetch(provider_username, seconds))
            self._flights[provider_username] = task
            task.add_done_callback(lambda done: self._landed(provider_username, done))
        return await asyncio.shield(task)

    async def charge(
        self,
        provider_username: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
    ) -> ChargeResult:
        """Charge the user's cached session; see `AsyncKNAIProvider.charge` for the arguments.

        Raises:
            NoActiveSessionError: The user has no active session.
            SessionExpiredError: The wallet refused the session (403/410); the
                user's entry is dropped, so the next `get` asks the wallet.
            KNAIError: As `AsyncKNAIProvider.charge`.
        """
        session = await self.get(provider_username)
        try:
            return await self.provider.charge(
                session.session_token,
                amount_tokens,
                model,
                idempotency_key=idempotency_key,
            )
        except SessionExpiredError:
            self._core.drop(provider_username, session)
            raise

    def invalidate(self, provider_username: str) -> None:
        """Forget the user: the next `get` asks the wallet (a call under way is not kept)."""
        self._core.drop(provider_username)
        self._flights.pop(provider_username, None)

    def stats(self) -> CacheStats:
        """Hits, misses and wallet polls so far."""
        return self._core.stats()

    async def _fetch(self, provider_username: str, wait: float) -> ActiveSession:
        self._core.polls += 1
        session = await self.provider.get_session(provider_username)
        if not session.is_active and wait > 0:
            self._core.polls += 1
            # Still not active at the deadline: cached as a "no" with the status first seen.
            with contextlib.suppress(_WaitTimeout):
                session = await self.provider.wait_for_session(
                    provider_username, self._core.poll_interval, timeout=wait
                )
        keep = self._flights.get(provider_username) is asyncio.current_task()
        return self._core.settle(provider_username, session, keep=keep)

    def _landed(self, provider_username: str, task: asyncio.Task[ActiveSession]) -> None:
        if self._flights.get(provider_username) is task:
            del self._flights[provider_username]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" log when every waiter left
