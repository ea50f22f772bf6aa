"""Which delivery outcomes are definite refusals (dead) and which stay pending: one table."""

from __future__ import annotations

import time

import pytest

import knai.outbox
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
)
from knai.outbox._deliver import Backoff, failed
from knai.outbox._store import Claim, derived_key

CLAIM = Claim("k", "k", "sess_tok_deliver", 5, "m", attempts=3)


@pytest.mark.parametrize(
    ("error", "state", "purged"),
    [
        (InvalidAPIKeyError(status_code=401), "dead", False),
        (InsufficientBalanceError(status_code=402), "dead", False),
        (SessionExpiredError(status_code=403), "dead", True),
        (SessionExpiredError(status_code=410), "dead", True),
        (KNAIError("conflict", status_code=409), "dead", False),
        (KNAIError("bad", status_code=422), "dead", False),
        (ValueError("the SDK refused the stored arguments"), "dead", False),
        (KNAIError("timeout", status_code=408), "pending", None),
        (RateLimitError(status_code=429), "pending", None),
        (ServerError(status_code=503, may_have_been_applied=True), "pending", None),
        (APIConnectionError(may_have_been_applied=True), "pending", None),
        (APITimeoutError(may_have_been_applied=False), "pending", None),
        (ResponseValidationError(status_code=200, may_have_been_applied=True), "pending", None),
        # A 4xx after an attempt that may have been applied is not a definite refusal.
        (KNAIError("odd", status_code=404, may_have_been_applied=True), "pending", None),
        (RuntimeError("a bug somewhere"), "pending", None),
    ],
)
def test_a_delivery_error_is_dead_only_if_it_is_a_definite_refusal(
    error: Exception, state: str, purged: bool | None
) -> None:
    outcome = failed(CLAIM, error, Backoff(0.5, 60.0))
    assert outcome.state == state
    assert outcome.send_key == "k"
    if state == "dead":
        assert outcome.purge_token is purged
        assert outcome.error_json is not None
        assert "sess_tok" not in outcome.error_json
    else:
        assert time.time() < outcome.retry_at <= time.time() + 2.0  # 0.5 * 2**2, jittered


def test_backoff_doubles_per_attempt_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 8.0)
    assert 0.25 <= backoff.delay(1) <= 0.5
    assert 2.0 <= backoff.delay(4) <= 4.0
    assert 4.0 <= backoff.delay(100) <= 8.0


def test_derived_keys_name_the_retry_and_stay_within_255_characters() -> None:
    assert derived_key("req-1", 0) == "req-1"
    assert derived_key("req-1", 2) == "req-1:retry2"
    long = derived_key("x" * 255, 1)
    assert len(long) <= 255
    assert long.endswith(":retry1")


def test_the_public_surface_is_exactly_what_is_documented() -> None:
    assert sorted(knai.outbox.__all__) == [
        "AsyncOutbox",
        "DeliveryError",
        "Outbox",
        "OutboxEntry",
        "OutboxStats",
        "PostgresStore",
        "SQLiteStore",
        "State",
        "Store",
        "open_store",
    ]
    for name in knai.outbox.__all__:
        assert getattr(knai.outbox, name).__doc__ or name == "State", name
