"""Protocol fidelity over a real loopback socket, with requests shaped as PROTOCOL.md says.

Every response of every test here also passes the ``wire`` fixture's checks: it
carries a unique ``X-Request-Id: req_<hex>`` and never echoes the API key or the
session token it was sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from knai.testing import (
    DEMO_API_KEY,
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    RunningSandbox,
)

from .conftest import CHARGE_PATH, PROTOCOL_HEADERS, STATUS_PATH, charge_headers

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME
REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# How knai-provider 0.1.0 turns a non-2xx answer into an exception (PROTOCOL.md).
EXCEPTION_010 = {
    401: "InvalidAPIKeyError",
    402: "InsufficientBalanceError",
    403: "SessionExpiredError",
    410: "SessionExpiredError",
}


def message_010(response: httpx.Response) -> str:
    """The exception message 0.1.0 shows for an error response."""
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text}
    return str(body.get("error") or body.get("message") or "Unknown error")


@pytest.fixture
def wire(server: RunningSandbox) -> Iterator[httpx.Client]:
    """A plain httpx client on the served sandbox that checks every response it gets."""
    seen: list[httpx.Response] = []

    def record(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    with httpx.Client(
        base_url=server.url, trust_env=False, event_hooks={"response": [record]}
    ) as client:
        yield client
    request_ids = [r.headers.get("x-request-id", "") for r in seen]
    assert all(REQUEST_ID.fullmatch(i) for i in request_ids), request_ids
    assert len(set(request_ids)) == len(request_ids)
    for response in seen:
        for secret_header in ("x-provider-api-key", "x-session-token"):
            secret = response.request.headers.get(secret_header)
            assert not secret or secret not in response.text, (secret_header, response.text)


def _status(wire: httpx.Client, username: str = USER, **headers: str) -> httpx.Response:
    return wire.get(
        STATUS_PATH, params={"provider_username": username}, headers={**PROTOCOL_HEADERS, **headers}
    )


def _charge(
    wire: httpx.Client,
    token: str,
    body: Any = None,
    *,
    key: str | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    if content is None:
        body = {"amount_tokens": 1500, "model": "gpt-4"} if body is None else body
        return wire.post(CHARGE_PATH, json=body, headers=charge_headers(token, key))
    return wire.post(CHARGE_PATH, content=content, headers=charge_headers(token, key))


# -- session status -------------------------------------------------------------


def test_status_of_an_active_session_has_the_token_the_readme_charges_with(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    opened = server.admin.open_session(SLUG, USER)

    response = _status(wire)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    session = response.json()
    assert session == {
        "status": "active",
        "session_token": opened.session_token,
        "session_id": opened.session_id,
        "provider_username": USER,
        "expires_at": opened.expires_at,
    }
    assert ISO_UTC.fullmatch(session["expires_at"])
    charged = _charge(wire, session["session_token"])
    assert charged.status_code == 200


def test_status_of_a_pending_session_has_no_token(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    opened = server.admin.open_session(SLUG, USER, activate_after=60)

    body = _status(wire).json()

    assert body == {
        "status": "pending",
        "session_id": opened.session_id,
        "provider_username": USER,
        "expires_at": opened.expires_at,
    }


@pytest.mark.parametrize("username", [USER, "never-seen"])
def test_status_without_any_session_is_inactive(wire: httpx.Client, username: str) -> None:
    response = _status(wire, username)
    assert (response.status_code, response.json()) == (
        200,
        {"status": "inactive", "provider_username": username},
    )


@pytest.mark.parametrize("end", ["expire", "revoke"])
def test_status_of_an_ended_session_says_how_and_has_no_token(
    server: RunningSandbox, wire: httpx.Client, end: str
) -> None:
    opened = server.admin.open_session(SLUG, USER)
    ended = getattr(server.admin, f"{end}_session")(opened.session_id)

    body = _status(wire).json()

    assert body == {
        "status": ended.status,
        "session_id": opened.session_id,
        "provider_username": USER,
        "expires_at": ended.expires_at,
    }
    assert body["status"] == {"expire": "expired", "revoke": "revoked"}[end]


@pytest.mark.parametrize("query", [{}, {"provider_username": ""}])
def test_status_without_provider_username_is_400(wire: httpx.Client, query: dict[str, str]) -> None:
    response = wire.get(STATUS_PATH, params=query, headers=PROTOCOL_HEADERS)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "provider_username is required"},
    )


# -- authentication -------------------------------------------------------------

BAD_AUTH = [
    pytest.param({"X-Provider-API-Key": "sk_test_wrong"}, id="wrong-key"),
    pytest.param({"X-Provider-Slug": "no-such-provider"}, id="unknown-slug"),
    pytest.param({"X-Provider-API-Key": ""}, id="empty-key"),
]


@pytest.mark.parametrize("override", BAD_AUTH)
def test_bad_credentials_on_status_are_401_invalid_api_key(
    wire: httpx.Client, override: dict[str, str]
) -> None:
    response = _status(wire, **override)
    assert response.status_code == 401
    assert message_010(response) == "Invalid API key"
    assert EXCEPTION_010[response.status_code] == "InvalidAPIKeyError"


@pytest.mark.parametrize("override", BAD_AUTH)
def test_bad_credentials_on_charge_are_401_and_charge_nothing(
    server: RunningSandbox, wire: httpx.Client, override: dict[str, str]
) -> None:
    token = server.admin.open_session(SLUG, USER).session_token
    headers = {**charge_headers(token), **override}

    response = wire.post(CHARGE_PATH, json={"amount_tokens": 5, "model": "m"}, headers=headers)

    assert (response.status_code, response.json()) == (401, {"error": "Invalid API key"})
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE


def test_missing_auth_headers_are_401(wire: httpx.Client) -> None:
    response = wire.get(STATUS_PATH, params={"provider_username": USER})
    assert response.status_code == 401


# -- charge ---------------------------------------------------------------------


def test_successful_charge_answers_the_documented_payload(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    token = server.admin.open_session(SLUG, USER).session_token

    response = _charge(wire, token, {"amount_tokens": 1500, "model": "gpt-4", "extra": [1]})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "charge_id",
        "status",
        "amount_tokens",
        "model",
        "remaining_balance",
        "provider_username",
        "created_at",
    }
    assert re.fullmatch(r"ch_[0-9a-f]+", body["charge_id"])
    assert ISO_UTC.fullmatch(body["created_at"])
    assert (body["status"], body["amount_tokens"], body["model"]) == ("succeeded", 1500, "gpt-4")
    assert body["remaining_balance"] == DEMO_BALANCE - 1500 == server.admin.balance(SLUG, USER)
    assert body["provider_username"] == USER


def test_charge_over_the_balance_is_402_with_the_balance_and_debits_nothing(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    server.admin.create_user(SLUG, "bob", balance=1000)
    token = server.admin.open_session(SLUG, "bob").session_token

    response = _charge(wire, token, {"amount_tokens": 1001, "model": "gpt-4"})

    assert response.status_code == 402
    assert response.json() == {"error": "Insufficient wallet balance", "balance": 1000}
    assert message_010(response) == "Insufficient wallet balance"
    assert server.admin.balance(SLUG, "bob") == 1000
    assert server.admin.charges(SLUG, "bob") == []


@pytest.mark.parametrize(
    ("setup", "status", "error"),
    [
        ("unknown", 403, "Invalid session token"),
        ("empty", 403, "Invalid session token"),
        ("revoked", 403, "Session revoked"),
        ("pending", 403, "Session is not active yet"),
        ("expired", 410, "Session has expired"),
    ],
)
def test_charge_with_an_unusable_session_token_maps_to_session_expired_in_010(
    server: RunningSandbox, wire: httpx.Client, setup: str, status: int, error: str
) -> None:
    session = server.admin.open_session(SLUG, USER, activate_after=60 if setup == "pending" else 0)
    token = {"unknown": "tok_unknown", "empty": ""}.get(setup, session.session_token)
    if setup == "revoked":
        server.admin.revoke_session(session.session_id)
    if setup == "expired":
        server.admin.expire_session(session.session_id)

    response = _charge(wire, token)

    assert (response.status_code, response.json()) == (status, {"error": error})
    assert EXCEPTION_010[status] == "SessionExpiredError"
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        (b"not json", 400, "Request body must be a JSON object"),
        (b"", 400, "Request body must be a JSON object"),
        (b'[1500, "gpt-4"]', 400, "Request body must be a JSON object"),
        (b'{"model": "gpt-4"}', 422, "amount_tokens must be a positive integer"),
        (
            b'{"amount_tokens": true, "model": "gpt-4"}',
            422,
            "amount_tokens must be a positive integer",
        ),
        (
            b'{"amount_tokens": 0, "model": "gpt-4"}',
            422,
            "amount_tokens must be a positive integer",
        ),
        (
            b'{"amount_tokens": -5, "model": "gpt-4"}',
            422,
            "amount_tokens must be a positive integer",
        ),
        (
            b'{"amount_tokens": 1.5, "model": "gpt-4"}',
            422,
            "amount_tokens must be a positive integer",
        ),
        (
            b'{"amount_tokens": "15", "model": "gpt-4"}',
            422,
            "amount_tokens must be a positive integer",
        ),
        (b'{"amount_tokens": 15}', 422, "model must be a non-empty string"),
        (b'{"amount_tokens": 15, "model": ""}', 422, "model must be a non-empty string"),
        (b'{"amount_tokens": 15, "model": 4}', 422, "model must be a non-empty string"),
    ],
)
def test_malformed_charge_bodies_are_400_or_422_and_charge_nothing(
    server: RunningSandbox, wire: httpx.Client, content: bytes, status: int, error: str
) -> None:
    token = server.admin.open_session(SLUG, USER).session_token

    response = _charge(wire, token, content=content)

    assert (response.status_code, message_010(response)) == (status, error)
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE


def test_idempotency_key_replays_the_same_charge_and_409s_on_a_different_body(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    token = server.admin.open_session(SLUG, USER).session_token

    first = _charge(wire, token, key="order-42")
    again = _charge(wire, token, key="order-42")
    other = _charge(wire, token, {"amount_tokens": 1, "model": "gpt-4"}, key="order-42")

    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert (other.status_code, other.json()) == (
        409,
        {"error": "Idempotency-Key reused with a different request"},
    )
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE - 1500


def test_unknown_paths_and_methods_answer_json_errors(wire: httpx.Client) -> None:
    missing = wire.get("/nope", headers=PROTOCOL_HEADERS)
    wrong_method = wire.get(CHARGE_PATH, headers=PROTOCOL_HEADERS)

    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": "Method Not Allowed"},
    )


def test_admin_answers_carry_request_ids_too(server: RunningSandbox, wire: httpx.Client) -> None:
    response = wire.get("/_sandbox/stats")
    assert response.status_code == 200
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])


def test_api_key_and_session_token_never_reach_the_logs(
    server: RunningSandbox, wire: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = server.admin.open_session(SLUG, USER)
    token = _status(wire).json()["session_token"]
    _charge(wire, token, key="k")
    _charge(wire, token, key="k")
    _charge(wire, token, {"amount_tokens": 10**12, "model": "m"})
    _charge(wire, token, content=b"{")
    _status(wire, **{"X-Provider-API-Key": "sk_test_wrong"})
    server.admin.inject_fault("charge", drop="after")
    with pytest.raises(httpx.RemoteProtocolError):
        _charge(wire, token)
    server.admin.expire_session(session.session_id)
    _charge(wire, token)

    sandbox_records = [r for r in caplog.records if r.name == "knai.testing"]
    assert sandbox_records, "the sandbox logs its decisions at DEBUG"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert DEMO_API_KEY not in text
        assert token not in text
