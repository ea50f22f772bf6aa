"""The pure half of `knai.sessions`: freshness, negative answers, LRU eviction, counters.

No I/O and no locking: `SessionCache` calls it under its lock, `AsyncSessionCache`
from its one event loop.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, cast

from . import ActiveSession, KNAIError

if TYPE_CHECKING:
    from . import Session

__all__ = ["CacheCore", "CacheStats", "NoActiveSessionError"]

DEFAULT_TTL = 300.0
DEFAULT_NEGATIVE_TTL = 1.0
# A session the wallet says ends at T is not handed out after T - margin, so a
# request that starts just before the end still has time to be charged.
DEFAULT_EXPIRY_MARGIN = 30.0
DEFAULT_MAX_USERS = 10_000
DEFAULT_POLL_INTERVAL = 1.5


class NoActiveSessionError(KNAIError):
    """The user has no active wallet session (none opened, pending, expired or revoked).

    Attributes:
        provider_username: The user asked about.
        last_status: The status the wallet last reported (e.g. `"pending"`,
            `"inactive"`, `"expired"`), or None when it is not known.
    """

    default_message = "No active session"

    def __init__(self, provider_username: str, last_status: str | None) -> None:
        super().__init__(
            f"no active session for provider_username {provider_username!r}"
            f" (last status: {last_status or 'unknown'})"
        )
        self.provider_username = provider_username
        self.last_status = last_status

    def __reduce__(self) -> tuple[type[NoActiveSessionError], tuple[str, str | None]]:
        # Pickled (by multiprocessing, error trackers) from its own arguments, not the message.
        return type(self), (self.provider_username, self.last_status)


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made.

    Attributes:
        hits: `get`s answered from memory (an active session or a cached "no").
        misses: `get`s that had to wait for the wallet (their own call or a shared one).
        polls: Calls the cache made to the wallet (`get_session`, and one per
            `wait_for_session` when `wait` is set).
    """

    hits: int
    misses: int
    polls: int


class _Entry:
    __slots__ = ("session", "status", "until")

    def __init__(self, session: ActiveSession | None, status: str | None, until: float) -> None:
        self.session = session  # None: the cached answer is "no active session"
        self.status = status
        self.until = until


def _seconds(name: str, value: object, *, zero_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        kind = "a non-negative" if zero_ok else "a positive"
        raise ValueError(f"{name} must be {kind}, finite number of seconds, got {value!r}")
    return float(value)


class CacheCore:
    """The decisions both caches share: what is fresh, what to keep, what to evict. No I/O."""

    def __init__(
        self,
        ttl: float,
        negative_ttl: float,
        expiry_margin: float,
        max_users: int,
        wait: float,
        poll_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.ttl = _seconds("ttl", ttl, zero_ok=False)
        self.negative_ttl = _seconds("negative_ttl", negative_ttl, zero_ok=True)
        self.expiry_margin = _seconds("expiry_margin", expiry_margin, zero_ok=True)
        self.wait = _seconds("wait", wait, zero_ok=True)
        self.poll_interval = _seconds("poll_interval", poll_interval, zero_ok=False)
        # Untyped callers pass anything: the annotation is checked at run time.
        if isinstance(max_users, bool) or not isinstance(cast(object, max_users), int):
            raise TypeError(f"max_users must be an int, got {type(max_users).__name__}")
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users!r}")
        self.max_users = max_users
        if not callable(clock):
            raise TypeError("clock must be a callable returning monotonic seconds")
        self.clock = clock
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = self.misses = self.polls = 0

    def wait_of(self, wait: float | None) -> float:
        return self.wait if wait is None else _seconds("wait", wait, zero_ok=True)

    def lookup(self, provider_username: str, wait: float) -> ActiveSession | None:
        """The fresh cached session, None on a miss; raises a cached "no" when not waiting."""
        entry = self.entries.get(provider_username)
        if entry is not None and (
            self.clock() >= entry.until or (entry.session is None and wait > 0)
        ):
            del self.entries[provider_username]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.entries.move_to_end(provider_username)
        self.hits += 1
        if entry.session is None:
            # A fresh exception each time: re-raising one instance grows its traceback.
            raise NoActiveSessionError(provider_username, entry.status)
        return entry.session

    def settle(self, provider_username: str, session: Session, *, keep: bool) -> ActiveSession:
        """Remember the wallet's answer (when `keep`); return it if active, else raise."""
        now = self.clock()
        # Parsing makes every active session an ActiveSession, whose token is a str.
        if isinstance(session, ActiveSession) and session.session_token:
            until = min(now + self.ttl, now + self._left(session))
            if keep and until > now:
                self._put(provider_username, _Entry(session, session.status, until))
            return session
        if keep and self.negative_ttl > 0:
            self._put(provider_username, _Entry(None, session.status, now + self.negative_ttl))
        raise NoActiveSessionError(provider_username, session.status)

    def drop(self, provider_username: str, session: Session | None = None) -> None:
        """Forget the user (only if the entry still holds `session`, when given)."""
        entry = self.entries.get(provider_username)
        if entry is not None and (session is None or entry.session is session):
            del self.entries[provider_username]

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, polls=self.polls)

    def _left(self, session: Session) -> float:
        expires_at = session.expires_at
        if expires_at is None:
            return math.inf
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
        # Wall time is read once, at fetch; from then on the monotonic clock counts.
        left = (expires_at - datetime.now(timezone.utc)).total_seconds()
        return left - self.expiry_margin

    def _put(self, provider_username: str, entry: _Entry) -> None:
        self.entries[provider_username] = entry
        self.entries.move_to_end(provider_username)
        while len(self.entries) > self.max_users:
            self.entries.popitem(last=False)
