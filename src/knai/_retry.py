"""When to retry and how long to wait: one small policy in front of tenacity.

`RetryPolicy.should_retry` and `parse_retry_after` are pure, so the whole
decision is testable as a table; tenacity only runs the loop, and never
appears in knai's public API.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import tenacity as _tenacity

from ._errors import APIConnectionError, KNAIError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

log = logging.getLogger("knai")
_LoopT = TypeVar("_LoopT", bound=_tenacity.BaseRetrying)
_T = TypeVar("_T")

#: Statuses that say "try again": timeout, rate limit, transient server errors.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date).

    Returns None when the header is absent or unreadable; never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        current = datetime.now(timezone.utc).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and the pause before each retry.

    Pauses grow exponentially from `initial_backoff` to `max_backoff`, each
    shortened by up to `jitter` (a fraction) so that many clients do not retry
    in step. A server's `Retry-After` replaces the backoff; one longer than
    `max_retry_after` is not waited for: the error is raised at once.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    jitter: float = 0.25
    sleep: Callable[[float], None] = time.sleep
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def should_retry(self, exc: BaseException) -> bool:
        """True when `exc` is a transient failure worth another attempt."""
        if isinstance(exc, APIConnectionError):
            return True
        if not isinstance(exc, KNAIError) or exc.status_code not in RETRYABLE_STATUSES:
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after

    def backoff(self, retry_number: int) -> float:
        """The pause before retry number `retry_number` (1-based), without Retry-After."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry_number - 1))
        return base * (1.0 - self.jitter * random.random())

    def _wait(self, state: _tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, KNAIError) and exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(state.attempt_number)

    def _loop(
        self, cls: type[_LoopT], sleep: Any, max_retries: int, deadline: float | None
    ) -> _LoopT:
        def stop(state: _tenacity.RetryCallState) -> bool:
            if state.attempt_number > max_retries:
                return True
            # Never sleep past a caller's deadline: give up and let it decide.
            return deadline is not None and time.monotonic() + state.upcoming_sleep >= deadline

        return cls(
            sleep=sleep,
            retry=_tenacity.retry_if_exception(self.should_retry),
            stop=stop,
            wait=self._wait,
            before_sleep=_log_retry,
            reraise=True,
            enabled=max_retries > 0,
        )

    def resume(
        self,
        failure: BaseException,
        attempt: Callable[..., _T],
        args: tuple[Any, ...],
        max_retries: int,
        deadline: float | None = None,
    ) -> _T:
        """Go on after `failure` ended the first attempt: retry `attempt(*args)` as policy says.

        The first attempt runs outside tenacity so that a call that succeeds
        at once pays nothing for the loop; tenacity replays `failure` as its
        own attempt 1 and takes every decision from there.
        """
        first: list[BaseException] = [failure]

        def again() -> _T:
            if first:
                raise first.pop()
            return attempt(*args)

        loop = self._loop(_tenacity.Retrying, self.sleep, max_retries, deadline)
        return loop(again)

    async def aresume(
        self,
        failure: BaseException,
        attempt: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        max_retries: int,
        deadline: float | None = None,
    ) -> _T:
        """The asyncio twin of `resume`."""
        first: list[BaseException] = [failure]

        async def again() -> _T:
            if first:
                raise first.pop()
            return await attempt(*args)

        loop = self._loop(_tenacity.AsyncRetrying, self.asleep, max_retries, deadline)
        return await loop(again)


def _log_retry(state: _tenacity.RetryCallState) -> None:
    if log.isEnabledFor(logging.INFO):
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "retrying in %.2f s after attempt %d failed: %s",
            state.upcoming_sleep,
            state.attempt_number,
            type(exc).__name__ if exc is None else f"{type(exc).__name__}: {exc}",
        )
