"""One delivery's verdict: sent, dead (a definite refusal), or pending again (outcome unknown)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._entry import DeliveryError
from ._store import SESSION_GONE, TRANSIENT_4XX, Claim, Outcome

if TYPE_CHECKING:
    from knai import ChargeResult

__all__ = ["Backoff", "failed", "logger", "sent"]

logger = logging.getLogger("knai.outbox")


@dataclass(frozen=True)
class Backoff:
    """Pause before redelivering a charge whose outcome is unknown: doubling, jittered, capped."""

    base: float = 0.5
    cap: float = 60.0

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base:
            raise ValueError(f"backoff needs 0 < base <= cap, got {self.base!r}, {self.cap!r}")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` deliveries."""
        return float(
            min(self.cap, self.base * 2.0 ** min(attempts - 1, 30)) * random.uniform(0.5, 1.0)
        )


def sent(claim: Claim, result: ChargeResult) -> Outcome:
    """The wallet applied the charge (or replayed that it had)."""
    logger.debug("outbox: charge %s sent (attempt %d)", claim.key, claim.attempts)
    return Outcome(claim.key, claim.send_key, "sent", result_json=result.to_json())


def failed(claim: Claim, exc: BaseException, backoff: Backoff) -> Outcome:
    """Dead for a definite refusal; otherwise pending again under the same key, after a pause."""
    from knai import KNAIError

    status = getattr(exc, "status_code", None)
    definite = isinstance(exc, (ValueError, TypeError)) or (
        isinstance(exc, KNAIError)
        and not exc.may_have_been_applied
        and status is not None
        and 400 <= status < 500
        and status not in TRANSIENT_4XX
    )
    if definite:
        error = DeliveryError(
            type=type(exc).__name__,
            message=str(getattr(exc, "message", exc)),
            status_code=status,
            request_id=getattr(exc, "request_id", None),
        )
        logger.warning(
            "outbox: charge %s refused (%s, HTTP %s): moved to the dead list",
            claim.key,
            error.type,
            status,
        )
        return Outcome(
            claim.key,
            claim.send_key,
            "dead",
            error_json=error.to_json(),
            purge_token=status in SESSION_GONE,
        )
    pause = backoff.delay(claim.attempts)
    logger.info(
        "outbox: charge %s not settled (%s); redelivering with the same key in %.1f s",
        claim.key,
        type(exc).__name__,
        pause,
    )
    return Outcome(claim.key, claim.send_key, "pending", retry_at=time.time() + pause)
