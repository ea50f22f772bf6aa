"""Retries through the public clients, sync and async: which, how often, how long, one key.

Also when a failed charge `may_have_been_applied`. The pure policy is in test_retry.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import partial

import httpx
import pytest
import respx

import knai._response
from knai import (
    APIConnectionError,
    APITimeoutError,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from knai._retry import parse_retry_after
from tests.support.statuses import PERMANENT
from tests.support.statuses import RETRIED as RETRIED_STATUSES
from tests.support.twin import (
    ACTIVE,
    CHARGE,
    CHARGED,
    FAILURES,
    STATUS,
    Twin,
    Twins,
    always,
    charge,
    reply,
)

pytestmark = pytest.mark.anyio

FINAL_ERROR = {
    "ConnectError": APIConnectionError,
    "ReadTimeout": APITimeoutError,
    **{str(status): error for status, error in RETRIED_STATUSES.items()},
}
RETRIED = list(FINAL_ERROR)


def backoff_bounds(sleeps: list[float]) -> bool:
    """Each recorded pause is the default backoff (0.5 s doubling, -25% jitter)."""
    return all(0.75 * 0.5 * 2**i <= pause <= 0.5 * 2**i for i, pause in enumerate(sleeps))


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", RETRIED)
async def test_transient_charge_failure_is_retried_then_succeeds(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], failure: str
) -> None:
    route = api.post(CHARGE).mock(side_effect=[FAILURES[failure], reply(body=CHARGED)])
    result = await charge(twin)
    assert result["charge_id"] == "ch_1"
    assert route.call_count == 2
    assert result.meta.retries == 1
    assert len(sleeps) == 1
    assert backoff_bounds(sleeps)


@pytest.mark.parametrize("failure", RETRIED)
async def test_transient_status_failure_twice_backs_off_exponentially(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], failure: str
) -> None:
    route = api.get(STATUS).mock(side_effect=[FAILURES[failure]] * 2 + [reply(body=ACTIVE)])
    session = await twin.get_session("user123")
    assert session.is_active
    assert route.call_count == 3
    assert session.meta.retries == 2
    assert len(sleeps) == 2
    assert backoff_bounds(sleeps)


@pytest.mark.parametrize("failure", RETRIED)
async def test_transient_failure_raises_once_retries_are_spent(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], failure: str
) -> None:
    route = always(api.post(CHARGE), failure)
    with pytest.raises(KNAIError) as info:
        await charge(twin)
    assert type(info.value) is FINAL_ERROR[failure]
    assert info.value.attempts == route.call_count == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("client_options", "copy_options", "call_options", "attempts"),
    [
        ({}, {}, {}, 3),
        ({"max_retries": 5}, {}, {}, 6),
        ({"max_retries": 0}, {}, {}, 1),
        ({}, {}, {"max_retries": 0}, 1),
        ({"max_retries": 5}, {}, {"max_retries": 1}, 2),
        ({}, {"max_retries": 1}, {}, 2),
    ],
    ids=["default", "client-5", "client-0", "call-0", "call-1-beats-client-5", "with_options-1"],
)
async def test_max_retries_sets_the_number_of_attempts(
    twins: Twins,
    api: respx.MockRouter,
    sleeps: list[float],
    client_options: dict[str, int],
    copy_options: dict[str, int],
    call_options: dict[str, int],
    attempts: int,
) -> None:
    route = api.get(STATUS).mock(return_value=reply(503, {"error": "down"}))
    twin = twins.make(**client_options)
    if copy_options:
        twin = twin.with_options(**copy_options)
    with pytest.raises(ServerError) as info:
        await twin.get_session("user123", **call_options)
    assert info.value.attempts == route.call_count == attempts
    assert len(sleeps) == attempts - 1
    assert all(
        0.75 * min(8.0, 0.5 * 2**i) <= s <= min(8.0, 0.5 * 2**i) for i, s in enumerate(sleeps)
    )


@pytest.mark.parametrize(("status", "error"), PERMANENT.items())
async def test_permanent_status_is_raised_after_one_request(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], status: int, error: type[KNAIError]
) -> None:
    route = api.post(CHARGE).mock(return_value=reply(status, {"error": "refused"}))
    with pytest.raises(KNAIError) as info:
        await charge(twin)
    assert type(info.value) is error
    assert str(info.value) == f"refused (HTTP {status})"
    assert info.value.attempts == route.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize("given", [None, "order-42"])
async def test_every_retry_of_a_charge_carries_the_same_idempotency_key(
    twin: Twin, api: respx.MockRouter, given: str | None
) -> None:
    route = api.post(CHARGE).mock(
        side_effect=[reply(503, {"error": "busy"}), httpx.ReadTimeout, reply(body=CHARGED)]
    )
    result = await charge(twin, idempotency_key=given)
    keys = [call.request.headers["Idempotency-Key"] for call in route.calls]
    assert len(keys) == 3
    assert set(keys) == {result.meta.idempotency_key}
    assert given is None or keys[0] == given
    assert len({call.request.content for call in route.calls}) == 1
    assert result.meta.retries == 2


async def test_separate_charges_use_different_keys(twin: Twin, api: respx.MockRouter) -> None:
    route = api.post(CHARGE).mock(return_value=reply(body=CHARGED))
    first, second = await charge(twin), await charge(twin)
    keys = [call.request.headers["Idempotency-Key"] for call in route.calls]
    assert keys == [first.meta.idempotency_key, second.meta.idempotency_key]
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    ("status", "header", "pause"), [(429, "3", 3.0), (503, "1.5", 1.5), (429, "0", 0.0)]
)
async def test_retry_after_seconds_replace_the_backoff(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], status: int, header: str, pause: float
) -> None:
    failed = reply(status, {"error": "later"}, {"Retry-After": header})
    api.post(CHARGE).mock(side_effect=[failed, reply(body=CHARGED)])
    result = await charge(twin)
    assert sleeps == [pause]
    assert result.meta.retries == 1


async def test_retry_after_http_date_is_honoured(
    twin: Twin, api: respx.MockRouter, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pin the parser's clock so the date means exactly 7 s from "now".
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    monkeypatch.setattr(knai._response, "parse_retry_after", partial(parse_retry_after, now=now))
    failed = reply(429, {"error": "later"}, {"Retry-After": "Wed, 01 Jan 2025 12:00:07 GMT"})
    api.post(CHARGE).mock(side_effect=[failed, reply(body=CHARGED)])
    await charge(twin)
    assert sleeps == [7.0]


async def test_retry_after_beyond_a_minute_is_not_waited_for(
    twin: Twin, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post(CHARGE).mock(
        return_value=reply(429, {"error": "slow down"}, {"Retry-After": "120"})
    )
    with pytest.raises(RateLimitError) as info:
        await charge(twin)
    assert info.value.retry_after == 120.0
    assert info.value.attempts == route.call_count == 1
    assert sleeps == []


# -- may_have_been_applied ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure", ["ReadTimeout", "WriteTimeout", "RemoteProtocolError", "500", "503"]
)
async def test_charge_without_a_clear_answer_may_have_been_applied(
    twin: Twin, api: respx.MockRouter, failure: str
) -> None:
    route = always(api.post(CHARGE), failure)
    with pytest.raises(KNAIError) as info:
        await charge(twin)
    assert info.value.may_have_been_applied is True
    assert info.value.idempotency_key == route.calls.last.request.headers["Idempotency-Key"]
    assert info.value.attempts == 3
    assert "may have been applied" in str(info.value)


@pytest.mark.parametrize("body", [b"<html>OK</html>", b"", b"[1]"])
async def test_charge_answered_2xx_unreadably_may_have_been_applied(
    twin: Twin, api: respx.MockRouter, body: bytes
) -> None:
    route = api.post(CHARGE).mock(return_value=reply(200, body))
    with pytest.raises(ResponseValidationError) as info:
        await charge(twin)
    assert info.value.may_have_been_applied is True
    assert info.value.idempotency_key == route.calls.last.request.headers["Idempotency-Key"]
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("ConnectError", APIConnectionError),
        ("ConnectTimeout", APITimeoutError),
        ("402", InsufficientBalanceError),
        ("401", InvalidAPIKeyError),
    ],
)
async def test_charge_that_was_refused_or_never_sent_was_not_applied(
    twin: Twin, api: respx.MockRouter, failure: str, error: type[KNAIError]
) -> None:
    route = always(api.post(CHARGE), failure)
    with pytest.raises(error) as info:
        await charge(twin)
    assert info.value.may_have_been_applied is False
    assert info.value.idempotency_key == route.calls.last.request.headers["Idempotency-Key"]


async def test_one_ambiguous_attempt_taints_the_whole_charge(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(side_effect=[httpx.ReadTimeout, httpx.ConnectError, httpx.ConnectError])
    with pytest.raises(APIConnectionError) as info:
        await charge(twin)
    assert type(info.value) is APIConnectionError
    assert info.value.attempts == 3
    assert info.value.may_have_been_applied is True


@pytest.mark.parametrize("failure", ["ReadTimeout", "RemoteProtocolError", "503"])
async def test_status_poll_errors_never_claim_a_charge(
    twin: Twin, api: respx.MockRouter, failure: str
) -> None:
    always(api.get(STATUS), failure)
    with pytest.raises(KNAIError) as info:
        await twin.get_session("user123")
    assert info.value.may_have_been_applied is False
    assert info.value.idempotency_key is None
