"""When to retry and how long to wait: `RetryPolicy`, with tenacity behind it.

`RetryPolicy.should_retry` and `parse_retry_after` are pure, so the whole
decision is testable as a table. tenacity's retry, wait and stop strategies
take every decision after a failure (the core asks them through
`Retrying.iter`, and does the sleeping itself); tenacity never appears in
knai's public API.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import cast

import tenacity as _tenacity

from ._constants import (
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_JITTER,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRY_AFTER,
    RETRYABLE_STATUSES,
)
from ._errors import APIConnectionError, KNAIError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

log = logging.getLogger("knai")


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


def _seconds(name: str, value: object, *, fraction: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (fraction and value > 1):
        bounds = "from 0 to 1" if fraction else ">= 0"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries transient failures: how often, and the pause before each retry.

    Connection errors, timeouts, 408, 429 and 5xx are retried; every retry of a
    charge carries the same `Idempotency-Key`. Pauses grow exponentially from
    `initial_backoff` to `max_backoff`, each shortened by up to `jitter` (a
    fraction) so that many clients do not retry in step. A server's
    `Retry-After` replaces the backoff; one longer than `max_retry_after` is
    not waited for: the error is raised at once. No pause runs past a deadline
    (`wait_for_session(timeout=...)`).

    Args:
        max_retries: Retries per call (0 turns retries off). None (the
            default) leaves the count to the client's `max_retries=`; set here,
            it is the client's default count (a `max_retries=` that is also
            given must then agree with it). A call's own `max_retries=` wins.
        initial_backoff: Seconds before the first retry.
        max_backoff: The longest pause between retries.
        max_retry_after: The longest `Retry-After` that is waited for.
        jitter: Up to this fraction of each pause is taken off at random.
        sleep: How the sync client pauses, between retries and between
            `wait_for_session` polls (a seam for tests).
        asleep: How the async client pauses (the same pauses).
        clock: Monotonic seconds, for deadlines and elapsed times. A fake
            clock that `sleep`/`asleep` move forward runs a whole wait
            without real time.

    Raises:
        ValueError: A number is negative, not finite, or `jitter` is over 1.

    Example:
        provider = KNAIProvider(retry=RetryPolicy(max_retries=5, max_backoff=2.0))
    """

    max_retries: int | None = None
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    jitter: float = DEFAULT_JITTER
    sleep: Callable[[float], None] = time.sleep
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    _engine: _tenacity.Retrying = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Untyped callers pass anything: the annotation is checked at run time.
        count = cast(object, self.max_retries)
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        for name in ("initial_backoff", "max_backoff", "max_retry_after"):
            _seconds(name, getattr(self, name))
        _seconds("jitter", self.jitter, fraction=True)
        for name in ("sleep", "asleep", "clock"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable")
        engine = _tenacity.Retrying(
            retry=_tenacity.retry_if_exception(self.should_retry),
            stop=self._stop,
            wait=self._wait,
            before_sleep=_log_retry,
            reraise=True,
        )
        object.__setattr__(self, "_engine", engine)

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

    # -- what tenacity asks ---------------------------------------------------------------

    def _wait(self, state: _tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, KNAIError) and exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(state.attempt_number)

    def _stop(self, state: _tenacity.RetryCallState) -> bool:
        if state.attempt_number > state.kwargs["max_retries"]:
            return True
        # Never sleep past a caller's deadline: give up and let it decide.
        deadline = state.kwargs["deadline"]
        return deadline is not None and self.clock() + state.upcoming_sleep >= deadline

    # -- what the core asks ---------------------------------------------------------------

    def start(self, max_retries: int, deadline: float | None) -> _tenacity.RetryCallState:
        """The retry state of one call that has just failed for the first time."""
        self._engine.begin()
        return _tenacity.RetryCallState(
            self._engine, None, (), {"max_retries": max_retries, "deadline": deadline}
        )

    def pause_after(self, state: _tenacity.RetryCallState, failure: KNAIError) -> float:
        """Seconds to pause before retrying after `failure`; raises `failure` when done."""
        state.set_exception((type(failure), failure, None))
        action = self._engine.iter(state)  # raises `failure` when it is not to be retried
        state.prepare_for_next_attempt()
        if not isinstance(action, _tenacity.DoSleep):  # with an outcome set, it never is
            raise failure
        return float(action)


def _log_retry(state: _tenacity.RetryCallState) -> None:
    if log.isEnabledFor(logging.INFO):
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "retrying in %.2f s after attempt %d failed: %s",
            state.upcoming_sleep,
            state.attempt_number,
            type(exc).__name__ if exc is None else f"{type(exc).__name__}: {exc}",
        )
