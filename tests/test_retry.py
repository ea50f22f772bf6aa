"""The retry policy as tables: what is retried, how Retry-After is read, how long to wait."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest

from knai import (
    APIConnectionError,
    APITimeoutError,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    SessionExpiredError,
    SessionWaitTimeoutError,
)
from knai._retry import RetryPolicy, parse_retry_after

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "exc",
    [
        APIConnectionError(),
        APITimeoutError(),
        KNAIError("timeout", 408),
        RateLimitError("slow down", 429),
        KNAIError("slow down", 429),
        ServerError("boom", 500),
        ServerError("bad gateway", 502),
        ServerError("unavailable", 503),
        ServerError("gateway timeout", 504),
        RateLimitError("slow down", 429, retry_after=60.0),
        ServerError("unavailable", 503, retry_after=0.0),
    ],
    ids=repr,
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert RetryPolicy().should_retry(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        KNAIError("bad request", 400),
        InvalidAPIKeyError(None, 401),
        InsufficientBalanceError(None, 402),
        SessionExpiredError(None, 403),
        KNAIError("not found", 404),
        KNAIError("conflict", 409),
        SessionExpiredError(None, 410),
        KNAIError("unprocessable", 422),
        KNAIError("moved", 301),
        ServerError("not implemented", 501),
        KNAIError("unknown"),
        ResponseValidationError(),
        ResponseValidationError("not JSON", 200, raw_body=b"<html>"),
        SessionWaitTimeoutError(),
        ValueError("amount_tokens must be positive"),
        TimeoutError(),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=repr,
)
def test_permanent_failures_and_foreign_exceptions_are_not_retried(exc: BaseException) -> None:
    assert RetryPolicy().should_retry(exc) is False


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_beyond_max_retry_after_is_not_retried(status: int) -> None:
    policy = RetryPolicy()
    assert policy.should_retry(KNAIError("wait", status, retry_after=60.5)) is False
    assert policy.should_retry(KNAIError("wait", status, retry_after=3600.0)) is False


def test_max_retry_after_is_configurable() -> None:
    policy = RetryPolicy(max_retry_after=5.0)
    assert policy.should_retry(RateLimitError("wait", 429, retry_after=5.0)) is True
    assert policy.should_retry(RateLimitError("wait", 429, retry_after=5.5)) is False


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("-1", 0.0),
        ("abc", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        (None, None),
        ("Wed, 01 Jan 2025 12:00:10 GMT", 10.0),
        ("Wed, 01 Jan 2025 12:02:00 GMT", 120.0),
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),
        ("Mon, 01 Jan 2024 00:00:00 GMT", 0.0),
        ("Wed, 01 Jan 2025 13:00:05 +0100", 5.0),
        ("Wed, 99 Foo 2025 12:00:10 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_parse_retry_after_http_date_defaults_to_the_real_clock() -> None:
    """Without now=, an HTTP date is measured from the current time."""
    future = datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() + 3600, timezone.utc)
    seconds = parse_retry_after(future.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None
    assert 3590 < seconds <= 3600


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=8.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.backoff(1000) == 8.0


def test_backoff_respects_custom_initial_and_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.3, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 5)] == pytest.approx([0.1, 0.2, 0.3, 0.3])


@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5, 6, 12])
def test_backoff_jitter_stays_within_bounds(retry_number: int) -> None:
    """Jitter only shortens the pause: base*(1-jitter) <= pause <= base."""
    policy = RetryPolicy()  # 0.5 s doubling to 8 s, jitter 0.25
    base = min(8.0, 0.5 * 2 ** (retry_number - 1))
    pauses = [policy.backoff(retry_number) for _ in range(300)]
    assert all(base * 0.75 <= pause <= base for pause in pauses)
    assert len(set(pauses)) > 1, "jitter must vary the pause"


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 1.0), (0.5, 0.875), (0.999999, 0.75)])
def test_backoff_jitter_extremes(
    monkeypatch: pytest.MonkeyPatch, draw: float, factor: float
) -> None:
    monkeypatch.setattr(random, "random", lambda: draw)
    policy = RetryPolicy()
    assert policy.backoff(3) == pytest.approx(2.0 * factor, abs=1e-5)
    assert policy.backoff(10) == pytest.approx(8.0 * factor, abs=1e-5)
