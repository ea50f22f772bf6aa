"""The ledger on its own: atomic charges, idempotency, session states over (fake) time."""

from __future__ import annotations

import re
import threading

import pytest

from knai.testing import (
    DEMO_API_KEY,
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    ConflictError,
    Ledger,
    NotFoundError,
)

from .conftest import FakeClock

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME


def _active_token(ledger: Ledger) -> str:
    return ledger.open_session(SLUG, USER).session_token


def test_charge_debits_the_wallet_and_answers_the_wire_body(ledger: Ledger) -> None:
    reply = ledger.authorize_charge(SLUG, _active_token(ledger), 1500, "gpt-4")

    assert reply.status == 200
    assert not reply.replayed
    body = dict(reply.body)
    assert re.fullmatch(r"ch_[0-9a-f]{24}", body.pop("charge_id"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body.pop("created_at"))
    assert body == {
        "status": "succeeded",
        "amount_tokens": 1500,
        "model": "gpt-4",
        "remaining_balance": DEMO_BALANCE - 1500,
        "provider_username": USER,
    }
    assert ledger.balance(SLUG, USER) == DEMO_BALANCE - 1500
    [charge] = ledger.charges(SLUG, USER)
    assert (charge.amount_tokens, charge.model, charge.idempotency_key) == (1500, "gpt-4", None)


def test_charge_larger_than_the_balance_is_refused_whole_and_changes_nothing(
    ledger: Ledger,
) -> None:
    ledger.add_user(SLUG, "bob", balance=100)
    token = ledger.open_session(SLUG, "bob").session_token

    reply = ledger.authorize_charge(SLUG, token, 101, "gpt-4")

    assert (reply.status, dict(reply.body)) == (
        402,
        {"error": "Insufficient wallet balance", "balance": 100},
    )
    assert ledger.balance(SLUG, "bob") == 100
    assert ledger.charges(SLUG, "bob") == []
    assert ledger.authorize_charge(SLUG, token, 100, "gpt-4").status == 200
    assert ledger.balance(SLUG, "bob") == 0


def test_same_idempotency_key_and_request_replays_the_first_answer_with_one_debit(
    ledger: Ledger,
) -> None:
    token = _active_token(ledger)
    first = ledger.authorize_charge(SLUG, token, 10, "gpt-4", idempotency_key="key-1")
    again = ledger.authorize_charge(SLUG, token, 10, "gpt-4", idempotency_key="key-1")

    assert again.replayed
    assert not first.replayed
    assert (again.status, again.body) == (first.status, first.body)
    assert ledger.balance(SLUG, USER) == DEMO_BALANCE - 10
    assert len(ledger.charges(SLUG, USER)) == 1


def test_idempotent_replay_outlives_the_session_it_was_made_with(ledger: Ledger) -> None:
    session = ledger.open_session(SLUG, USER)
    first = ledger.authorize_charge(SLUG, session.session_token, 10, "m", idempotency_key="k")
    ledger.revoke_session(session.session_id)

    again = ledger.authorize_charge(SLUG, session.session_token, 10, "m", idempotency_key="k")

    assert (again.status, again.body) == (200, first.body)


@pytest.mark.parametrize(
    ("amount", "model", "other_token"),
    [(11, "gpt-4", False), (10, "gpt-4o", False), (10, "gpt-4", True)],
    ids=["other-amount", "other-model", "other-token"],
)
def test_idempotency_key_reused_with_a_different_request_is_refused_409(
    ledger: Ledger, amount: int, model: str, other_token: bool
) -> None:
    token = _active_token(ledger)
    ledger.authorize_charge(SLUG, token, 10, "gpt-4", idempotency_key="key-1")
    token2 = _active_token(ledger) if other_token else token

    reply = ledger.authorize_charge(SLUG, token2, amount, model, idempotency_key="key-1")

    assert (reply.status, dict(reply.body)) == (
        409,
        {"error": "Idempotency-Key reused with a different request"},
    )
    assert ledger.balance(SLUG, USER) == DEMO_BALANCE - 10


def test_idempotency_keys_are_scoped_per_provider(ledger: Ledger) -> None:
    ledger.add_provider("other", "sk_test_other")
    ledger.add_user("other", USER, balance=50)
    other_token = ledger.open_session("other", USER).session_token
    ledger.authorize_charge(SLUG, _active_token(ledger), 10, "m", idempotency_key="shared")

    reply = ledger.authorize_charge("other", other_token, 20, "m", idempotency_key="shared")

    assert reply.status == 200
    assert ledger.balance("other", USER) == 30


def test_a_402_is_replayed_but_a_rejected_session_is_not_recorded(ledger: Ledger) -> None:
    ledger.add_user(SLUG, "bob", balance=5)
    session = ledger.open_session(SLUG, "bob", activate_after=0)
    token = session.session_token
    assert ledger.authorize_charge(SLUG, token, 10, "m", idempotency_key="k").status == 402
    ledger.top_up(SLUG, "bob", 100)
    # The refusal for balance was a decision: the same key keeps answering it.
    assert ledger.authorize_charge(SLUG, token, 10, "m", idempotency_key="k").status == 402

    pending = ledger.open_session(SLUG, "bob", activate_after=60).session_token
    assert ledger.authorize_charge(SLUG, pending, 1, "m", idempotency_key="p").status == 403
    # The session check came before any decision: a valid retry with the key goes through.
    assert ledger.authorize_charge(SLUG, token, 1, "m", idempotency_key="p").status == 200


def test_a_charge_without_a_key_is_applied_once_per_call(ledger: Ledger) -> None:
    token = _active_token(ledger)
    for _ in range(3):
        assert ledger.authorize_charge(SLUG, token, 10, "m").status == 200
    assert ledger.balance(SLUG, USER) == DEMO_BALANCE - 30


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [("", 403, "Invalid session token"), ("not-a-token", 403, "Invalid session token")],
)
def test_unknown_session_token_is_refused_403(
    ledger: Ledger, token: str, status: int, error: str
) -> None:
    reply = ledger.authorize_charge(SLUG, token, 1, "m")
    assert (reply.status, dict(reply.body)) == (status, {"error": error})


def test_session_token_of_another_provider_is_invalid(ledger: Ledger) -> None:
    ledger.add_provider("other", "sk_test_other")
    ledger.add_user("other", USER)
    other_token = ledger.open_session("other", USER).session_token
    assert ledger.authorize_charge(SLUG, other_token, 1, "m").status == 403


def test_session_goes_pending_active_expired_with_activate_after_and_ttl(
    ledger: Ledger, clock: FakeClock
) -> None:
    session = ledger.open_session(SLUG, USER, activate_after=5, ttl=10)
    token = session.session_token
    assert session.status == "pending"
    assert ledger.authorize_charge(SLUG, token, 1, "m").status == 403

    clock.advance(5)
    assert ledger.session_status(SLUG, USER).status == "active"  # type: ignore[union-attr]
    assert ledger.authorize_charge(SLUG, token, 1, "m").status == 200

    clock.advance(10)
    assert ledger.session_status(SLUG, USER).status == "expired"  # type: ignore[union-attr]
    reply = ledger.authorize_charge(SLUG, token, 1, "m")
    assert (reply.status, dict(reply.body)) == (410, {"error": "Session has expired"})


def test_session_timestamps_follow_the_ledger_clock(ledger: Ledger, clock: FakeClock) -> None:
    session = ledger.open_session(SLUG, USER, activate_after=60, ttl=3600)
    opened = session.activates_at
    clock.advance(30)
    expired = ledger.expire_session(session.session_id)

    assert session.created_at < session.activates_at < session.expires_at
    assert expired.status == "expired"
    assert expired.activates_at == opened
    assert expired.expires_at < opened  # ended 30 s in, before it would have activated


def test_expire_and_revoke_end_a_session_and_revoked_wins(ledger: Ledger) -> None:
    session = ledger.open_session(SLUG, USER)
    token = session.session_token

    assert ledger.expire_session(session.session_id).status == "expired"
    assert ledger.authorize_charge(SLUG, token, 1, "m").status == 410
    assert ledger.revoke_session(session.session_id).status == "revoked"
    assert ledger.expire_session(session.session_id).status == "revoked"
    reply = ledger.authorize_charge(SLUG, token, 1, "m")
    assert (reply.status, dict(reply.body)) == (403, {"error": "Session revoked"})


def test_status_reports_the_newest_active_session_else_the_newest(
    ledger: Ledger, clock: FakeClock
) -> None:
    assert ledger.session_status(SLUG, USER) is None
    active = ledger.open_session(SLUG, USER)
    ledger.open_session(SLUG, USER, activate_after=30)
    assert ledger.session_status(SLUG, USER).session_id == active.session_id  # type: ignore[union-attr]

    ledger.revoke_session(active.session_id)
    assert ledger.session_status(SLUG, USER).status == "pending"  # type: ignore[union-attr]


def test_authenticate_checks_slug_and_key(ledger: Ledger) -> None:
    assert ledger.authenticate(SLUG, DEMO_API_KEY)
    assert not ledger.authenticate(SLUG, DEMO_API_KEY + "x")
    assert not ledger.authenticate("nobody", DEMO_API_KEY)
    assert not ledger.authenticate(SLUG, "ключ")  # non-ASCII input is just wrong, not an error


def test_admin_operations_refuse_unknown_and_duplicate_names(ledger: Ledger) -> None:
    with pytest.raises(ConflictError):
        ledger.add_provider(SLUG, "sk_test_x")
    with pytest.raises(ConflictError):
        ledger.add_user(SLUG, USER)
    with pytest.raises(NotFoundError):
        ledger.add_user("nobody", "x")
    with pytest.raises(NotFoundError):
        ledger.balance(SLUG, "nobody")
    with pytest.raises(NotFoundError):
        ledger.open_session(SLUG, "nobody")
    with pytest.raises(NotFoundError):
        ledger.revoke_session("ses_nope")


@pytest.mark.parametrize("amount", [0, -1, True, 1.5])
def test_direct_charges_with_invalid_amounts_raise_value_error(ledger: Ledger, amount: int) -> None:
    with pytest.raises(ValueError, match="amount_tokens"):
        ledger.authorize_charge(SLUG, _active_token(ledger), amount, "m")


def test_reset_returns_to_the_demo_seed(ledger: Ledger) -> None:
    ledger.add_user(SLUG, "bob", balance=5)
    ledger.authorize_charge(SLUG, _active_token(ledger), 10, "m", idempotency_key="k")

    ledger.reset()

    assert ledger.balance(SLUG, USER) == DEMO_BALANCE
    assert ledger.charges(SLUG, USER) == []
    with pytest.raises(NotFoundError):
        ledger.balance(SLUG, "bob")
    assert ledger.session_status(SLUG, USER) is None


def test_session_info_repr_hides_the_token(ledger: Ledger) -> None:
    session = ledger.open_session(SLUG, USER)
    assert session.session_token not in repr(session)


def test_every_ledger_operation_waits_for_the_one_ledger_lock(ledger: Ledger) -> None:
    """White-box: the concurrency tests cannot force a race under the GIL, so check the lock."""
    session = ledger.open_session(SLUG, USER)
    operations = {
        "charge": lambda: ledger.authorize_charge(SLUG, session.session_token, 1, "m"),
        "top_up": lambda: ledger.top_up(SLUG, USER, 1),
        "add_user": lambda: ledger.add_user(SLUG, "late"),
        "open_session": lambda: ledger.open_session(SLUG, USER),
        "revoke": lambda: ledger.revoke_session(session.session_id),
        "status": lambda: ledger.session_status(SLUG, USER),
        "balance": lambda: ledger.balance(SLUG, USER),
        "reset": ledger.reset,
    }
    for name, operation in operations.items():
        with ledger._lock:
            worker = threading.Thread(target=operation)
            worker.start()
            worker.join(0.02)
            assert worker.is_alive(), f"{name} ran without the lock"
        worker.join(2)
        assert not worker.is_alive()
