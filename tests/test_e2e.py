"""End to end: both clients against the sandbox wallet served by uvicorn on a loopback socket.

One server per module (tests/conftest.py's `server`), its ledger reset before each test.

Every scenario runs through `KNAIProvider` and `AsyncKNAIProvider` alike and checks
what a user observes: the result or the exception, and the wallet's balance and
charges as the sandbox admin reports them. The last section drives the same
README flow through the in-process transports, with sockets forbidden.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import httpx
import pytest

from knai import (
    APIConnectionError,
    AsyncKNAIProvider,
    ChargeResult,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    KNAIProvider,
    ServerError,
    SessionExpiredError,
    SessionWaitTimeoutError,
)
from knai.testing import (
    DEMO_API_KEY,
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    RunningSandbox,
    Sandbox,
    SandboxAdmin,
)
from knai.testing.pytest_plugin import quick_retries
from tests.support.twin import Twin, Twins

pytestmark = pytest.mark.anyio

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME


Make = Callable[..., Twin]


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, server: RunningSandbox) -> AsyncIterator[Make]:
    """Makes providers of one flavour for the served sandbox (quick retries); closes them all."""
    twins = Twins(
        request.param,
        [],
        retries=quick_retries,
        provider_api_key=DEMO_API_KEY,
        provider_slug=SLUG,
        base_url=server.url,
    )
    yield twins.make
    await twins.aclose()


@pytest.fixture
def client(make: Make) -> Twin:
    return make()


@pytest.fixture
def admin(server: RunningSandbox) -> SandboxAdmin:
    """The admin of the module's served sandbox, reset for this test."""
    return server.admin


@pytest.fixture
def token(admin: SandboxAdmin) -> str:
    """The token of an active session on the demo wallet."""
    return admin.open_session(SLUG, USER).session_token


def debited(admin: SandboxAdmin) -> list[str]:
    """The charge ids the demo wallet holds, oldest first."""
    return [c.charge_id for c in admin.charges(SLUG, USER)]


def balance(admin: SandboxAdmin) -> int:
    return admin.balance(SLUG, USER)


async def readme_flow(client: Twin, admin: SandboxAdmin) -> None:
    """The published README flow against a session that turns active 0.3 s later."""
    info = admin.open_session(SLUG, USER, activate_after=0.3)

    session = await client.wait_for_session(provider_username=USER, poll_interval=0.05, timeout=5)
    assert session.is_active
    assert session["session_token"] == info.session_token
    assert session.session_id == info.session_id
    assert admin.stats().requests["status"] > 1  # it polled while the session was pending

    result = await client.charge(
        session_token=session["session_token"], amount_tokens=1500, model="gpt-4"
    )
    [applied] = admin.charges(SLUG, USER)
    assert isinstance(result, ChargeResult)
    assert result.charge_id == result["charge_id"] == applied.charge_id
    assert result.amount_tokens == 1500 == applied.amount_tokens
    assert result.remaining_balance == balance(admin) == DEMO_BALANCE - 1500
    assert result.meta.request_id is not None
    assert result.meta.request_id.startswith("req_")
    assert result.meta.idempotency_key == applied.idempotency_key
    assert result.meta.retries == 0


async def test_readme_flow_waits_for_the_session_then_charges_it_once(
    client: Twin, admin: SandboxAdmin
) -> None:
    await readme_flow(client, admin)


# -- every error status, from the real server ----------------------------------------------------


async def test_wrong_api_key_or_slug_raises_401_from_charge_and_from_session_polling(
    make: Make, admin: SandboxAdmin, token: str
) -> None:
    for client in (make(provider_api_key="sk_test_wrong"), make(provider_slug="no-such-slug")):
        with pytest.raises(InvalidAPIKeyError) as charged:
            await client.charge(token, 100, "gpt-4")
        with pytest.raises(InvalidAPIKeyError) as polled:
            await client.get_session(USER)
        with pytest.raises(InvalidAPIKeyError):  # at once, not after the timeout
            await client.wait_for_session(USER, poll_interval=0.05, timeout=30)
        assert charged.value.status_code == polled.value.status_code == 401
        assert "sk_test_wrong" not in str(charged.value) + repr(charged.value)
    assert balance(admin) == DEMO_BALANCE
    assert debited(admin) == []


async def test_charge_over_the_balance_raises_402_and_changes_nothing(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    with pytest.raises(InsufficientBalanceError) as caught:
        await client.charge(token, DEMO_BALANCE + 1, "gpt-4")
    assert caught.value.status_code == 402
    assert caught.value.response_body["balance"] == DEMO_BALANCE
    assert caught.value.may_have_been_applied is False
    assert balance(admin) == DEMO_BALANCE
    assert debited(admin) == []


@pytest.mark.parametrize(
    ("session", "status"),
    [("unknown", 403), ("pending", 403), ("revoked", 403), ("expired", 410)],
)
async def test_unusable_session_raises_session_expired_with_its_status(
    client: Twin, admin: SandboxAdmin, session: str, status: int
) -> None:
    info = admin.open_session(SLUG, USER, activate_after=60 if session == "pending" else 0)
    token = "sess_never_issued" if session == "unknown" else info.session_token
    if session == "revoked":
        admin.revoke_session(info.session_id)
    elif session == "expired":
        admin.expire_session(info.session_id)

    with pytest.raises(SessionExpiredError) as caught:
        await client.charge(token, 100, "gpt-4")
    assert caught.value.status_code == status
    assert caught.value.attempts == 1
    assert balance(admin) == DEMO_BALANCE


@pytest.mark.parametrize("state", ["pending", "no session"])
async def test_waiting_for_a_session_that_never_activates_times_out(
    client: Twin, admin: SandboxAdmin, state: str
) -> None:
    admin.create_user(SLUG, "late-user", balance=10)
    if state == "pending":
        admin.open_session(SLUG, "late-user", activate_after=60)

    started = time.monotonic()
    with pytest.raises(SessionWaitTimeoutError) as caught:
        await client.wait_for_session("late-user", poll_interval=0.05, timeout=0.3)
    assert 0.29 <= time.monotonic() - started < 2
    assert isinstance(caught.value, TimeoutError)
    assert ("pending" if state == "pending" else "inactive") in str(caught.value)
    assert admin.stats().requests["status"] >= 3


async def test_idempotency_key_reused_with_another_body_raises_409_without_retrying(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    first = await client.charge(token, 100, "gpt-4", idempotency_key="order-42")
    before = admin.stats().requests["charge"]

    with pytest.raises(KNAIError) as caught:
        await client.charge(token, 200, "gpt-4", idempotency_key="order-42")
    assert type(caught.value) is KNAIError
    assert caught.value.status_code == 409
    assert caught.value.attempts == 1
    assert admin.stats().requests["charge"] == before + 1
    assert debited(admin) == [first.charge_id]
    assert balance(admin) == DEMO_BALANCE - 100


async def test_rate_limited_charge_is_retried_after_retry_after_and_succeeds(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", status=429, retry_after=0)
    result = await client.charge(token, 100, "gpt-4")
    assert result.meta.retries == 1
    assert admin.stats().requests["charge"] == 2
    assert debited(admin) == [result.charge_id]
    assert balance(admin) == DEMO_BALANCE - 100


async def test_server_errors_past_max_retries_raise_server_error_after_three_attempts(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", status=503, times=3)
    with pytest.raises(ServerError) as caught:
        await client.charge(token, 100, "gpt-4", max_retries=2)
    error = caught.value
    assert error.status_code == 503
    assert error.attempts == 3
    assert error.may_have_been_applied is True  # a 5xx does not prove nothing was charged
    assert error.idempotency_key
    stats = admin.stats()
    assert stats.requests["charge"] == stats.faults_fired["charge"] == 3
    assert balance(admin) == DEMO_BALANCE


# -- exactly once ----------------------------------------------------------------------------------


async def test_connection_dropped_after_the_debit_is_retried_into_the_same_charge(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", drop="after")
    result = await client.charge(token, 1500, "gpt-4")
    [applied] = admin.charges(SLUG, USER)
    assert result.charge_id == applied.charge_id
    assert result.meta.idempotency_key == applied.idempotency_key
    assert result.meta.retries == 1
    assert result.meta.headers.get("idempotent-replayed") == "true"
    assert result.remaining_balance == balance(admin) == DEMO_BALANCE - 1500


async def test_connection_dropped_before_the_debit_is_retried_and_debits_once(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", drop="before")
    result = await client.charge(token, 1500, "gpt-4")
    assert result.meta.retries == 1
    assert "idempotent-replayed" not in result.meta.headers
    assert debited(admin) == [result.charge_id]
    assert balance(admin) == DEMO_BALANCE - 1500


async def test_two_bad_gateways_then_success_debit_once_with_one_key(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", status=502, times=2)
    result = await client.charge(token, 1500, "gpt-4")
    assert result.meta.retries == 2
    assert admin.stats().requests["charge"] == 3
    [applied] = admin.charges(SLUG, USER)
    assert (applied.charge_id, applied.idempotency_key) == (
        result.charge_id,
        result.meta.idempotency_key,
    )
    assert balance(admin) == DEMO_BALANCE - 1500


async def test_replaying_a_callers_key_after_a_crash_returns_the_same_charge(
    make: Make, admin: SandboxAdmin, token: str
) -> None:
    first = await make().charge(token, 1500, "gpt-4", idempotency_key="job-7:usage")
    # The process crashed before recording the outcome; its successor replays the job.
    again = await make().charge(token, 1500, "gpt-4", idempotency_key="job-7:usage")
    assert again.charge_id == first.charge_id
    assert again.remaining_balance == first.remaining_balance
    assert again.meta.idempotency_key == "job-7:usage"
    assert debited(admin) == [first.charge_id]
    assert balance(admin) == DEMO_BALANCE - 1500


async def test_retries_exhausted_after_a_debit_say_so_and_the_key_settles_the_charge(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", drop="after")
    with pytest.raises(APIConnectionError) as caught:
        await client.charge(token, 1500, "gpt-4", max_retries=0)
    error = caught.value
    [applied] = admin.charges(SLUG, USER)
    assert error.status_code is None
    assert error.attempts == 1
    assert error.may_have_been_applied is True
    assert "may have been applied" in str(error)
    assert error.idempotency_key == applied.idempotency_key

    settled = await client.charge(token, 1500, "gpt-4", idempotency_key=error.idempotency_key)
    assert settled.charge_id == applied.charge_id
    assert debited(admin) == [applied.charge_id]
    assert settled.remaining_balance == balance(admin) == DEMO_BALANCE - 1500


async def test_charge_timing_out_while_the_wallet_works_is_retried_and_debited_once(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    admin.inject_fault("charge", delay=0.3)  # attempt 1 lands after the client gave up on it
    result = await client.charge(token, 1500, "gpt-4", timeout=0.1)
    assert result.meta.retries == 1
    await asyncio.sleep(0.5)  # the slow attempt has now reached the ledger: a replay
    assert debited(admin) == [result.charge_id]
    assert balance(admin) == DEMO_BALANCE - 1500


async def test_refusal_after_a_dropped_attempt_stays_unsettled_until_the_key_is_replayed(
    client: Twin, admin: SandboxAdmin, token: str
) -> None:
    """A 402 after a lost answer may hide an applied first attempt (keys are undocumented)."""
    admin.inject_fault("charge", drop="after")  # the wallet refuses; that answer is lost
    with pytest.raises(InsufficientBalanceError) as caught:
        await client.charge(token, DEMO_BALANCE + 1, "gpt-4")
    assert caught.value.attempts == 2
    assert caught.value.may_have_been_applied is True
    assert "may have been applied" in str(caught.value)
    with pytest.raises(InsufficientBalanceError) as replayed:
        await client.charge(
            token, DEMO_BALANCE + 1, "gpt-4", idempotency_key=caught.value.idempotency_key
        )
    assert replayed.value.may_have_been_applied is False  # the replay's answer is definite
    assert debited(admin) == []
    assert balance(admin) == DEMO_BALANCE


# -- in process: the same wallet through httpx's transport hook, no socket -------------------------


def _no_sockets(*args: object) -> NoReturn:
    raise AssertionError("the in-process mode opened a network connection")


@pytest.fixture(params=["sync", "async"])
async def in_process(
    request: pytest.FixtureRequest, knai_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Twin]:
    """A provider wired to `knai_sandbox` by an httpx transport, with connect() forbidden."""
    monkeypatch.setattr(socket.socket, "connect", _no_sockets)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_sockets)
    http: httpx.Client | httpx.AsyncClient
    provider: KNAIProvider | AsyncKNAIProvider
    if request.param == "async":
        http = httpx.AsyncClient(transport=knai_sandbox.async_transport())
        provider = AsyncKNAIProvider(
            DEMO_API_KEY, SLUG, base_url=knai_sandbox.url, http_client=http
        )
    else:
        http = httpx.Client(transport=knai_sandbox.transport())
        provider = KNAIProvider(DEMO_API_KEY, SLUG, base_url=knai_sandbox.url, http_client=http)
    quick_retries(provider)
    client = Twin(provider)
    yield client
    await client.close()
    assert not http.is_closed  # the SDK leaves a client it was given to its owner
    if isinstance(http, httpx.AsyncClient):
        await http.aclose()
    else:
        http.close()


async def test_readme_flow_in_process_without_a_socket(
    in_process: Twin, knai_sandbox: Sandbox
) -> None:
    await readme_flow(in_process, knai_sandbox.admin)


async def test_dropped_charge_in_process_is_retried_into_the_same_charge(
    in_process: Twin, knai_sandbox: Sandbox
) -> None:
    admin = knai_sandbox.admin
    token = admin.open_session(SLUG, USER).session_token
    admin.inject_fault("charge", drop="after")
    result = await in_process.charge(token, 1500, "gpt-4")
    assert result.meta.retries == 1
    assert debited(admin) == [result.charge_id]
    assert balance(admin) == DEMO_BALANCE - 1500
