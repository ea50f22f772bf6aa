"""The records an outbox hands back: one charge (`OutboxEntry`) and the totals (`OutboxStats`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from knai import ChargeResult

__all__ = ["DeliveryError", "OutboxEntry", "OutboxStats", "State"]

State = Literal["pending", "sent", "dead"]


@dataclass(frozen=True)
class DeliveryError:
    """Why a charge is on the dead list: the wallet's definite refusal.

    Attributes:
        type: The exception class, e.g. ``"InsufficientBalanceError"``.
        message: The wallet's message.
        status_code: The HTTP status (402, 403, 409, ...), or None.
        request_id: The response's ``X-Request-Id``, for KNAI support.
    """

    type: str
    message: str
    status_code: int | None = None
    request_id: str | None = None

    def to_json(self) -> str:
        """The error as JSON (how the stores keep it)."""
        return json.dumps(
            {
                "type": self.type,
                "message": self.message,
                "status_code": self.status_code,
                "request_id": self.request_id,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DeliveryError:
        """Read back what `to_json` wrote."""
        data = json.loads(text)
        return cls(
            type=str(data["type"]),
            message=str(data["message"]),
            status_code=data.get("status_code"),
            request_id=data.get("request_id"),
        )


@dataclass(frozen=True)
class OutboxEntry:
    """One charge in an outbox. It never holds the session token.

    Attributes:
        idempotency_key: The charge's key; its identity in the outbox.
        amount_tokens: Tokens to charge.
        model: The model the usage was of.
        state: ``"pending"`` (not yet settled, in flight included),
            ``"sent"`` (applied by the wallet) or ``"dead"`` (refused).
        attempts: Deliveries so far (each one is an SDK `charge()` with its
            own retries).
        created_at: When `charge()` stored it (UTC).
        result: The wallet's `ChargeResult`, once sent.
        error: The refusal, once dead.
        retries: How many times `retry_dead()` resent it.
        send_key: The ``Idempotency-Key`` it is delivered under: the
            idempotency key, or after `retry_dead()` a key derived from it.
    """

    idempotency_key: str
    amount_tokens: int
    model: str
    state: State
    attempts: int
    created_at: datetime
    result: ChargeResult | None = None
    error: DeliveryError | None = None
    retries: int = 0
    send_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what `knai outbox` prints)."""
        return {
            "idempotency_key": self.idempotency_key,
            "amount_tokens": self.amount_tokens,
            "model": self.model,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "result": None if self.result is None else self.result.to_dict(),
            "error": None if self.error is None else json.loads(self.error.to_json()),
            "retries": self.retries,
            "send_key": self.send_key,
        }


@dataclass(frozen=True)
class OutboxStats:
    """Counts per state, and the age in seconds of the oldest pending charge (None if none)."""

    pending: int
    sent: int
    dead: int
    oldest_pending_age: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "pending": self.pending,
            "sent": self.sent,
            "dead": self.dead,
            "oldest_pending_age": self.oldest_pending_age,
        }


def timestamp(seconds: float) -> datetime:
    """An epoch time as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def build_entry(
    key: str,
    amount_tokens: int,
    model: str,
    state: str,
    attempts: int,
    created_at: float,
    result_json: str | None,
    error_json: str | None,
    retries: int,
    send_key: str,
) -> OutboxEntry:
    """An entry from a stored row (both stores keep the same columns)."""
    result = None
    if result_json is not None:
        from knai import ChargeResult

        result = ChargeResult.model_validate_json(result_json)
    return OutboxEntry(
        idempotency_key=key,
        amount_tokens=int(amount_tokens),
        model=model,
        state=state,  # type: ignore[arg-type]
        attempts=int(attempts),
        created_at=timestamp(float(created_at)),
        result=result,
        error=None if error_json is None else DeliveryError.from_json(error_json),
        retries=int(retries),
        send_key=send_key,
    )
