"""SandboxAdmin drives the admin API the same way in process and over a socket."""

from __future__ import annotations

import httpx
import pytest

from knai.testing import (
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    RunningSandbox,
    Sandbox,
    SandboxAdmin,
    SandboxAdminError,
)

SLUG = DEMO_PROVIDER_SLUG


@pytest.fixture(params=["in-process", "served"])
def admin(request: pytest.FixtureRequest, sandbox: Sandbox, server: RunningSandbox) -> SandboxAdmin:
    return sandbox.admin if request.param == "in-process" else server.admin


def test_wallet_lifecycle_round_trips(admin: SandboxAdmin) -> None:
    admin.create_provider("acme", "sk_test_acme")
    assert admin.create_user("acme", "alice", balance=50) == 50
    assert admin.top_up("acme", "alice", 25) == 75
    assert admin.balance("acme", "alice") == 75
    assert admin.charges("acme", "alice") == []


def test_sessions_open_with_a_token_and_end_without_one(admin: SandboxAdmin) -> None:
    opened = admin.open_session(SLUG, DEMO_USERNAME, activate_after=30, ttl=60)
    revoked = admin.revoke_session(opened.session_id)

    assert opened.status == "pending"
    assert opened.session_token
    assert opened.session_token not in repr(opened)
    assert revoked.session_id == opened.session_id
    assert (revoked.status, revoked.session_token) == ("revoked", "")


def test_charges_are_listed_with_their_idempotency_keys(
    admin: SandboxAdmin, sandbox: Sandbox, server: RunningSandbox
) -> None:
    ledger = sandbox.ledger if admin is sandbox.admin else server.ledger
    token = admin.open_session(SLUG, DEMO_USERNAME).session_token
    ledger.authorize_charge(SLUG, token, 5, "gpt-4", idempotency_key="order-1")

    [charge] = admin.charges(SLUG, DEMO_USERNAME)

    assert (charge.amount_tokens, charge.model, charge.idempotency_key) == (5, "gpt-4", "order-1")
    assert admin.balance(SLUG, DEMO_USERNAME) == DEMO_BALANCE - 5


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda a: a.create_provider(SLUG, "sk_test_again"), 409),
        (lambda a: a.create_user(SLUG, DEMO_USERNAME), 409),
        (lambda a: a.create_user("nobody", "x"), 404),
        (lambda a: a.balance(SLUG, "nobody"), 404),
        (lambda a: a.top_up(SLUG, DEMO_USERNAME, 0), 422),
        (lambda a: a.create_user(SLUG, "neg", balance=-1), 422),
        (lambda a: a.open_session(SLUG, DEMO_USERNAME, ttl=0), 422),
        (lambda a: a.expire_session("ses_unknown"), 404),
        (lambda a: a.create_provider("acme", "ключ"), 422),
    ],
    ids=[
        "duplicate-provider",
        "duplicate-user",
        "unknown-provider",
        "unknown-user",
        "zero-top-up",
        "negative-balance",
        "zero-ttl",
        "unknown-session",
        "non-ascii-key",
    ],
)
def test_refusals_raise_sandbox_admin_error_with_the_status(
    admin: SandboxAdmin, call: object, status: int
) -> None:
    with pytest.raises(SandboxAdminError) as refused:
        call(admin)  # type: ignore[operator]
    assert refused.value.status_code == status
    assert str(refused.value).endswith(f"(HTTP {status})")


def test_reset_restores_the_demo_seed_and_zeroes_counters(admin: SandboxAdmin) -> None:
    admin.create_user(SLUG, "temp", balance=1)
    admin.inject_fault("charge", status=503)

    admin.reset()

    assert admin.faults() == []
    assert admin.balance(SLUG, DEMO_USERNAME) == DEMO_BALANCE
    with pytest.raises(SandboxAdminError):
        admin.balance(SLUG, "temp")
    stats = admin.stats()
    assert stats.requests == {"status": 0, "charge": 0}


def test_admin_body_must_be_a_json_object(server: RunningSandbox) -> None:
    response = httpx.post(f"{server.url}/_sandbox/users", content=b"[]", trust_env=False)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "Request body must be a JSON object"},
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:abc",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1/?",
        "http://127.0.0.1/#",
        "ftp://127.0.0.1",
        "http://user:pw@127.0.0.1",
        "http://127.0.0.1\x00",
        "",
    ],
)
def test_an_admin_url_httpx_would_not_take_is_a_value_error_naming_it(url: str) -> None:
    """The SDK's base_url check, not an httpx.InvalidURL on the first call."""
    with pytest.raises(ValueError, match=r"^base_url "):
        SandboxAdmin(url)


def test_an_admin_url_loses_surrounding_whitespace(server: RunningSandbox) -> None:
    with SandboxAdmin(f" {server.url}/\r\n") as admin:
        assert admin.stats().requests is not None  # it reached the sandbox


def test_an_admin_url_may_be_plain_http_to_a_container() -> None:
    """The admin API holds no secret: http to a non-loopback host (a sandbox container) is fine."""
    SandboxAdmin("http://knai-sandbox:8750").close()
