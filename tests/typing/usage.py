"""Code a user would write, checked by `mypy --strict` (mypy.ini) and never run.

Every result carries an `assert_type`. Lines marked `# type: ignore[...]` must be
type errors: with `warn_unused_ignores` (strict), mypy fails if one type-checks.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import httpx

import knai
from knai import (
    ActiveSession,
    APIConnectionError,
    AsyncKNAIProvider,
    ChargeResult,
    InsufficientBalanceError,
    JSONValue,
    KNAIError,
    KNAIProvider,
    ResponseMeta,
    ResponseValidationError,
    Session,
    SessionExpiredError,
    SessionStatus,
    SessionWaitTimeoutError,
)
from knai.testing import DEMO_API_KEY, RunningSandbox, Sandbox, serve

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

TOKEN = "sess_tok_example"


def sync_usage() -> None:
    provider = KNAIProvider(
        provider_api_key="sk_test",
        provider_slug="acme-ai",
        base_url="https://api.conx.ai",
        timeout=10.0,
        max_retries=3,
        http_client=httpx.Client(),
        default_headers={"X-Trace": "1"},
    )
    assert_type(provider, KNAIProvider)
    assert_type(KNAIProvider(), KNAIProvider)
    assert_type(KNAIProvider(timeout=httpx.Timeout(5.0, connect=1.0)), KNAIProvider)
    assert_type(KNAIProvider(max_connections=20), KNAIProvider)
    assert_type(AsyncKNAIProvider(max_connections=200), AsyncKNAIProvider)
    assert_type(provider.base_url, str)
    assert_type(provider.provider_slug, str)

    with KNAIProvider(provider_api_key="sk_test", provider_slug="acme-ai") as managed:
        assert_type(managed, KNAIProvider)

    assert_type(provider.get_session("user123"), Session)
    assert_type(provider.get_session("user123", timeout=2.5, max_retries=0), Session)
    session = provider.wait_for_session(provider_username="user123", poll_interval=0.5, timeout=60)
    assert_type(session, ActiveSession)
    assert_type(provider.wait_for_session("user123"), ActiveSession)

    assert_type(session["session_token"], Any)
    assert_type(session.get("plan"), Any)
    assert_type(session.session_token, str)
    assert_type(session.status, Literal["active"])
    assert_type(session.is_active, bool)
    assert_type(session.to_dict(), dict[str, Any])
    assert_type(session.to_json(), str)
    assert_type(dict(session), dict[str, Any])
    assert_type("status" in session, bool)
    assert_type(len(session), int)
    for key in session:
        assert_type(key, str)

    polled = provider.get_session("user123")
    assert_type(polled.session_token, str | None)
    assert_type(polled.status, SessionStatus)
    if polled.status == "expired":
        assert_type(polled.status, Literal["expired"])
    if isinstance(polled, ActiveSession):
        assert_type(polled.session_token, str)
        provider.charge(polled.session_token, 1, "gpt-4")
    as_session: Session = session
    del as_session

    result = provider.charge(
        session.session_token,
        amount_tokens=1500,
        model="gpt-4",
        idempotency_key="order-42",
        timeout=httpx.Timeout(5.0),
        max_retries=1,
    )
    assert_type(result, ChargeResult)
    assert_type(provider.charge(session["session_token"], 1500, "gpt-4", timeout=2.0), ChargeResult)
    assert_type(result.meta, ResponseMeta)
    assert_type(result.meta.request_id, str | None)
    assert_type(result.meta.idempotency_key, str | None)
    assert_type(result.meta.retries, int)
    assert_type(result.meta.status_code, int)
    assert_type(result.amount_tokens, int | None)
    assert_type(result.charge_id, str | None)

    assert_type(provider.with_options(timeout=2.0, max_retries=0), KNAIProvider)
    assert_type(provider.with_options(timeout=httpx.Timeout(1.0)), KNAIProvider)

    try:
        provider.charge(TOKEN, 1500, "gpt-4")
    except InsufficientBalanceError as exc:
        assert_type(exc.status_code, int | None)
        assert_type(exc.message, str)
    except SessionExpiredError as exc:
        assert_type(exc.response_body, JSONValue)
    except ResponseValidationError as exc:
        assert_type(exc.raw_body, bytes)
    except APIConnectionError as exc:
        assert_type(exc.may_have_been_applied, bool)
        assert_type(exc.idempotency_key, str | None)
    except KNAIError as exc:
        assert_type(exc.status_code, int | None)
        assert_type(exc.request_id, str | None)
        assert_type(exc.retry_after, float | None)
        assert_type(exc.attempts, int)
    try:
        provider.wait_for_session("user123", timeout=5)
    except SessionWaitTimeoutError as exc:
        timeout_error: TimeoutError = exc
        del timeout_error
    provider.close()

    assert_type(knai.__version__, str)


def sync_misuse(provider: KNAIProvider, session: Session) -> None:
    provider.charge(TOKEN, "5", "gpt-4")  # type: ignore[arg-type]
    provider.charge(TOKEN, 1500, None)  # type: ignore[arg-type]
    provider.charge(TOKEN, 1500, "gpt-4", "order-42")  # type: ignore[call-arg]
    provider.charge(TOKEN, 1500, "gpt-4", idempotency_key=42)  # type: ignore[arg-type]
    provider.get_session(123)  # type: ignore[arg-type]
    provider.wait_for_session("user123", timeout="60")  # type: ignore[arg-type]
    KNAIProvider(timeout="30")  # type: ignore[arg-type]
    KNAIProvider(max_retries=None)  # type: ignore[arg-type]
    AsyncKNAIProvider(max_connections="100")  # type: ignore[arg-type]
    KNAIProvider(http_client=httpx.AsyncClient())  # type: ignore[arg-type]
    KNAIProvider(provider_api_key="k", provider_slug="s", unknown=1)  # type: ignore[call-arg]
    session["status"] = "pending"  # type: ignore[index]
    session.status = "pending"  # type: ignore[misc]
    with AsyncKNAIProvider():  # type: ignore[attr-defined]
        pass


async def async_usage() -> None:
    provider = AsyncKNAIProvider(
        provider_api_key="sk_test",
        provider_slug="acme-ai",
        base_url="http://127.0.0.1:8080",
        timeout=httpx.Timeout(10.0),
        max_retries=0,
        http_client=httpx.AsyncClient(),
        default_headers={"X-Trace": "1"},
    )
    assert_type(provider, AsyncKNAIProvider)

    async with AsyncKNAIProvider() as managed:
        assert_type(managed, AsyncKNAIProvider)

    assert_type(await provider.get_session("user123", timeout=1.0, max_retries=2), Session)
    session = await provider.wait_for_session("user123", poll_interval=0.5, timeout=30.0)
    assert_type(session, ActiveSession)
    assert_type(session["session_token"], Any)
    assert_type(session.session_token, str)
    assert_type(session.is_active, bool)

    result = await provider.charge(
        session.session_token,
        amount_tokens=1500,
        model="gpt-4",
        idempotency_key="order-42",
        timeout=3.0,
        max_retries=2,
    )
    assert_type(result, ChargeResult)
    assert_type(result.meta.request_id, str | None)
    assert_type(result.meta.retries, int)
    assert_type(provider.with_options(max_retries=5), AsyncKNAIProvider)

    try:
        await provider.charge(TOKEN, 1500, "gpt-4")
    except KNAIError as exc:
        assert_type(exc.status_code, int | None)
        assert_type(exc.idempotency_key, str | None)
        assert_type(exc.may_have_been_applied, bool)
    await provider.aclose()


async def async_misuse(provider: AsyncKNAIProvider) -> None:
    not_awaited: ChargeResult = provider.charge(TOKEN, 1500, "gpt-4")  # type: ignore[assignment]
    await provider.charge(TOKEN, 1.5, "gpt-4")  # type: ignore[arg-type]
    AsyncKNAIProvider(http_client=httpx.Client())  # type: ignore[arg-type]
    provider.close()  # type: ignore[attr-defined]
    del not_awaited


def sandbox_usage() -> None:
    with Sandbox() as sandbox, sandbox.serve() as running:
        assert_type(running, RunningSandbox)
        assert_type(running.url, str)
    with serve() as served:
        assert_type(served, RunningSandbox)
    assert_type(KNAIProvider(DEMO_API_KEY, "demo-provider"), KNAIProvider)
