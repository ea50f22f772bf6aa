"""The call core and what it decides for both clients: budgets, deep JSON, unexpected errors,
the public retry hook (issue 9 items 4 and 5; issue 11)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import respx

from knai import (
    AsyncKNAIProvider,
    KNAIError,
    KNAIProvider,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    SessionWaitTimeoutError,
)
from knai._constants import MAX_JSON_DEPTH
from knai._core import Plan, Send, call_steps
from knai._models import ChargeResult
from knai._response import DeepJSONError, load_json
from knai._types import Call
from tests.conftest import API_KEY, SLUG
from tests.support.rogue import Action, Reply, RogueServer
from tests.support.twin import CHARGE, CHARGED, STATUS, Twin, Twins, charge, reply

pytestmark = pytest.mark.anyio


# -- the per-attempt budget (item 4) --------------------------------------------------------------


def first_send(timeout: httpx.Timeout, deadline: float | None = None) -> Send:
    call = Call("POST", CHARGE, None, {}, b"{}", idempotency_key="k")
    plan = Plan(RetryPolicy(clock=lambda: 100.0), timeout, 0, deadline)
    step = next(call_steps(call, lambda: ChargeResult, plan))
    assert isinstance(step, Send)
    return step


@pytest.mark.parametrize(
    "timeout",
    [httpx.Timeout(1.0, read=None), httpx.Timeout(None, connect=1.0), httpx.Timeout(None)],
)
def test_an_unset_read_or_connect_timeout_puts_no_limit_on_the_attempt(
    timeout: httpx.Timeout,
) -> None:
    assert first_send(timeout).until is None


def test_the_attempt_budget_is_connect_then_read_and_never_past_the_deadline() -> None:
    assert first_send(httpx.Timeout(30.0, connect=5.0)).until == 135.0
    assert first_send(httpx.Timeout(30.0, connect=5.0), deadline=110.0).until == 110.0
    assert first_send(httpx.Timeout(1.0, read=None), deadline=110.0).until == 110.0


class Slow(Action):
    """Answer CHARGED after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def perform(self, conn: Any, server: RogueServer) -> bool:
        time.sleep(self.delay)
        return Reply(200, CHARGED).perform(conn, server)


@pytest.mark.parametrize("cls", [KNAIProvider, AsyncKNAIProvider])
@pytest.mark.parametrize(
    "timeout", [httpx.Timeout(0.2, read=None), httpx.Timeout(None, connect=0.2)]
)
async def test_read_none_waits_for_an_answer_slower_than_the_connect_timeout(
    cls: type[KNAIProvider | AsyncKNAIProvider], timeout: httpx.Timeout
) -> None:
    """An applied charge answered after 0.6 s is a result, not a timeout."""
    with RogueServer(Slow(0.6)) as server:
        twin = Twin(cls(API_KEY, SLUG, server.url, timeout=timeout, max_retries=0))
        result = await charge(twin)
        await twin.close()
    assert result.charge_id == "ch_1"


# -- deep JSON (item 5) ---------------------------------------------------------------------------


def deep(levels: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * levels + inner + b"}" * levels


def test_json_nesting_is_bounded_before_it_is_parsed() -> None:
    assert load_json(deep(MAX_JSON_DEPTH)) is not None
    assert load_json(b'{"k": "' + b"[" * 500 + b'"}') == {"k": "[" * 500}  # inside a string
    with pytest.raises(DeepJSONError):
        load_json(deep(MAX_JSON_DEPTH + 1))
    with pytest.raises(DeepJSONError):
        load_json(b"[" * 100_000)


async def test_a_deep_2xx_is_a_typed_error_that_may_have_been_applied(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(return_value=reply(200, deep(500)))
    with pytest.raises(ResponseValidationError) as caught:
        await charge(twin)
    assert "nested deeper" in str(caught.value)
    assert caught.value.may_have_been_applied is True
    str(caught.value), repr(caught.value)


async def test_a_deep_503_is_a_server_error_that_may_have_been_applied(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(return_value=reply(503, deep(500)))
    with pytest.raises(ServerError) as caught:
        await charge(twin, max_retries=0)
    assert caught.value.may_have_been_applied is True
    assert isinstance(caught.value.response_body, dict)  # kept as text, not parsed


async def test_a_deep_error_answer_to_a_status_poll_is_typed(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(return_value=reply(400, deep(800)))
    with pytest.raises(KNAIError) as caught:
        await twin.get_session("user123")
    assert caught.value.status_code == 400


# -- anything else that escapes the I/O -----------------------------------------------------------


async def test_an_unexpected_error_after_sending_is_a_knai_error_that_may_have_been_applied(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(side_effect=RuntimeError("Event loop is closed"))
    with pytest.raises(KNAIError) as caught:
        await charge(twin)
    assert type(caught.value) is KNAIError
    assert caught.value.may_have_been_applied is True
    assert caught.value.attempts == 1  # an unknown failure is not retried
    assert isinstance(caught.value.__cause__, RuntimeError)


# -- the public retry hook ------------------------------------------------------------------------


async def test_retry_policy_sets_attempts_backoff_and_the_sleep(
    twins: Twins, api: respx.MockRouter
) -> None:
    pauses: list[float] = []

    async def asleep(seconds: float) -> None:
        pauses.append(seconds)

    policy = RetryPolicy(
        max_retries=4,
        initial_backoff=0.1,
        max_backoff=0.3,
        jitter=0.0,
        sleep=pauses.append,
        asleep=asleep,
    )
    route = api.post(CHARGE).mock(return_value=reply(503, {"error": "down"}))
    twin = twins.make(retry=policy)
    with pytest.raises(ServerError) as caught:
        await charge(twin)
    assert route.call_count == caught.value.attempts == 5
    assert pauses == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert twin.provider.max_retries == 4


async def test_a_retry_after_over_the_policys_cap_is_not_waited_for(
    twins: Twins, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post(CHARGE).mock(return_value=reply(429, {}, {"Retry-After": "5"}))
    twin = twins.make(retry=RetryPolicy(max_retry_after=2.0, sleep=sleeps.append))
    with pytest.raises(KNAIError):
        await charge(twin)
    assert route.call_count == 1


def test_max_retries_and_the_policys_count_combine_as_documented() -> None:
    assert KNAIProvider(API_KEY, SLUG).max_retries == 2
    assert KNAIProvider(API_KEY, SLUG, max_retries=5).max_retries == 5
    assert KNAIProvider(API_KEY, SLUG, retry=RetryPolicy(jitter=0)).max_retries == 2
    assert KNAIProvider(API_KEY, SLUG, max_retries=0, retry=RetryPolicy()).max_retries == 0
    assert KNAIProvider(API_KEY, SLUG, retry=RetryPolicy(max_retries=7)).max_retries == 7
    with pytest.raises(ValueError, match="max_retries"):
        KNAIProvider(API_KEY, SLUG, max_retries=3, retry=RetryPolicy(max_retries=7))


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"initial_backoff": -0.1}, "initial_backoff"),
        ({"max_backoff": float("inf")}, "max_backoff"),
        ({"max_retry_after": "5"}, "max_retry_after"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_argument(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**options)


def test_retry_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        KNAIProvider(API_KEY, SLUG, retry={"max_retries": 1})  # type: ignore[arg-type]


async def test_the_policys_clock_drives_the_wait_deadline(
    twins: Twins, api: respx.MockRouter
) -> None:
    """A clock 20 s faster per reading: a 300 s wait ends after a few polls, at once."""
    readings = iter(range(0, 10**6, 20))
    api.get(STATUS).mock(return_value=reply(200, {"status": "pending"}))
    twin = twins.make(retry=RetryPolicy(clock=lambda: float(next(readings))))
    started = time.monotonic()
    with pytest.raises(SessionWaitTimeoutError):
        await twin.wait_for_session("user123", poll_interval=0.01, timeout=300.0)
    assert time.monotonic() - started < 5.0
    assert 1 <= api.calls.call_count <= 5


async def test_an_unknown_keyword_is_refused_before_anything_is_sent(
    twin: Twin, api: respx.MockRouter
) -> None:
    """The async twins take the sync signature as their own: a wrong name is a TypeError."""
    route = api.post(CHARGE).mock(return_value=reply(body=CHARGED))
    with pytest.raises(TypeError, match="idempotencykey"):
        await twin.charge("tok_1", 1, "gpt-4", idempotencykey="k")
    with pytest.raises(TypeError, match="retries"):
        await twin.get_session("user123", retries=1)
    assert route.call_count == 0


def test_the_async_twins_show_the_sync_signature() -> None:
    import inspect

    for name in ("get_session", "wait_for_session", "charge"):
        sync, asyn = getattr(KNAIProvider, name), getattr(AsyncKNAIProvider, name)
        assert inspect.signature(asyn) == inspect.signature(sync)
        assert inspect.iscoroutinefunction(asyn)
