"""The sandbox wallet's records: what the ledger hands out and the errors it raises.

Frozen values only, so a caller can keep a `Reply`, `Charge` or `SessionInfo`
without seeing the ledger change under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

SessionState = Literal["pending", "active", "expired", "revoked"]
"""The states of a sandbox session, as its status endpoint reports them."""

DEMO_PROVIDER_SLUG = "demo-provider"
"""The slug of the provider every demo ledger (and `Sandbox()`) starts with."""
DEMO_API_KEY = "sk_test_knai_sandbox_demo_key_not_secret"
"""The demo provider's API key (a public test value, not a secret)."""
DEMO_USERNAME = "demo-user"
"""The user whose wallet the demo ledger funds."""
DEMO_BALANCE = 100_000
"""The demo wallet's starting balance, in tokens."""


class LedgerError(Exception):
    """A sandbox admin operation was refused."""


class NotFoundError(LedgerError):
    """No such provider, user or session."""


class ConflictError(LedgerError):
    """The provider or user already exists."""


@dataclass(frozen=True)
class Reply:
    """A charge answer as the wire shows it: HTTP status and JSON body.

    ``replayed`` is true when the reply came from an idempotency record.
    """

    status: int
    body: Mapping[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class Charge:
    """One applied debit."""

    charge_id: str
    provider_username: str
    amount_tokens: int
    model: str
    created_at: str
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The charge as the admin API spells it."""
        return {
            "charge_id": self.charge_id,
            "provider_username": self.provider_username,
            "amount_tokens": self.amount_tokens,
            "model": self.model,
            "created_at": self.created_at,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True)
class SessionInfo:
    """A session as seen at one instant. The token is kept out of ``repr``."""

    session_id: str
    provider_username: str
    status: SessionState
    created_at: str
    activates_at: str
    expires_at: str
    session_token: str = field(repr=False)


def iso_utc(moment: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``: ISO-8601, UTC, milliseconds."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
