"""What a meter needs of an outbox: a `charge` that stores a charge for later delivery.

Structural types only, so that `import knai.metering` never loads `knai.outbox`;
`knai.outbox.Outbox` and `AsyncOutbox` match them.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Protocol

from typing_extensions import TypeVar

if TYPE_CHECKING:
    from knai import ChargeResult
    from knai.outbox import OutboxEntry

__all__ = ["AsyncChargeOutbox", "ChargeOutbox", "R", "check_outbox"]

# What a meter's `charge` returns: the wallet's `ChargeResult` inline (the
# default, so a bare `Meter` annotation keeps meaning that), or the stored
# `OutboxEntry` when the meter charges through an outbox.
R = TypeVar("R", default="ChargeResult")


class ChargeOutbox(Protocol):
    """A sync outbox (`knai.outbox.Outbox`): `charge` returns once the charge is stored."""

    def charge(
        self,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = ...,
    ) -> OutboxEntry: ...


class AsyncChargeOutbox(Protocol):
    """An async outbox (`knai.outbox.AsyncOutbox`): `charge` is awaited until stored."""

    async def charge(
        self,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = ...,
    ) -> OutboxEntry: ...


def check_outbox(outbox: object, *, is_async: bool) -> None:
    """Raise `TypeError` naming `outbox` unless its `charge` has the right flavour."""
    charge = getattr(outbox, "charge", None)
    if not callable(charge) or inspect.iscoroutinefunction(charge) != is_async:
        want = "an AsyncOutbox (async charge)" if is_async else "an Outbox (sync charge)"
        raise TypeError(f"outbox must be {want}, got {type(outbox).__name__}")
