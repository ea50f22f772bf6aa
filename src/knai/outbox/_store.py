"""What an outbox needs from its store, and the few rules every store shares.

A store keeps one row per idempotency key. Rows move
``pending -> sent`` or ``pending -> dead``; `retry_dead` moves ``dead -> pending``
under a derived send key. Senders `claim` due pending rows (a lease only they
hold while they deliver), then `settle` them with an `Outcome`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ._entry import OutboxEntry, OutboxStats

__all__ = ["Claim", "Outcome", "Store", "check_charge", "derived_key"]

_MAX_KEY = 255
_RETRY_SUFFIX = re.compile(r":retry\d+$")
# Statuses whose refusal a later delivery may overturn: they stay pending.
TRANSIENT_4XX = frozenset({408, 425, 429})
# A refusal that ends the session: the token can never be charged again.
SESSION_GONE = frozenset({403, 410})


@dataclass(frozen=True)
class Claim:
    """A pending charge a sender holds and must deliver, then settle."""

    key: str
    send_key: str
    session_token: str = field(repr=False)
    amount_tokens: int
    model: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended.

    ``state`` ``"sent"`` carries the result's JSON; ``"dead"`` the error's
    JSON; ``"pending"`` (outcome unknown, or a transient refusal) the epoch
    time before which it is not delivered again.
    """

    key: str
    send_key: str
    state: Literal["pending", "sent", "dead"]
    result_json: str | None = None
    error_json: str | None = None
    retry_at: float = 0.0
    purge_token: bool = True


@runtime_checkable
class Store(Protocol):
    """The storage behind an outbox (`SQLiteStore`, `PostgresStore`)."""

    def add(
        self,
        key: str,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        connection: Any = None,
    ) -> OutboxEntry:
        """Store a pending charge durably, or return the row already under `key`.

        Raises ValueError if `key` holds a different charge.
        """
        ...

    def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due pending charges to this store's sender."""
        ...

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record delivered outcomes and release their leases, in one transaction."""
        ...

    def exchange(self, outcomes: Sequence[Outcome], limit: int) -> list[Claim]:
        """`settle(outcomes)`, then `claim(limit)`, in one transaction (the sender's turn)."""
        ...

    def get(self, key: str) -> OutboxEntry | None:
        """The entry under `key`, or None."""
        ...

    def entries(self, state: str, limit: int | None = None) -> list[OutboxEntry]:
        """Entries in `state`, oldest first."""
        ...

    def stats(self) -> OutboxStats:
        """Counts per state and the oldest pending charge's age."""
        ...

    def retry_dead(self, key: str, session_token: str | None = None) -> OutboxEntry:
        """Make a dead charge pending again under the next derived send key.

        Raises KeyError if `key` is unknown, ValueError if it is not dead or
        has no token left to send with (pass a new `session_token`).
        """
        ...

    def release(self) -> None:
        """Give up this store's leases (at a clean stop)."""
        ...

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections, open new ones on use."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...


def derived_key(key: str, retries: int) -> str:
    """The send key of the `retries`-th `retry_dead` of `key` (0: the key itself).

    ``f"{key}:retry{n}"``, or when that would exceed the wallet's 255 characters,
    a digest of the key in its place.
    """
    if retries == 0:
        return key
    suffix = f":retry{retries}"
    if len(key) + len(suffix) <= _MAX_KEY:
        return key + suffix
    return hashlib.sha256(key.encode()).hexdigest() + suffix


def check_charge(
    session_token: object, amount_tokens: object, model: object, idempotency_key: object
) -> None:
    """Raise ValueError/TypeError naming the argument before anything is stored."""
    if not isinstance(session_token, str):
        raise TypeError(f"session_token must be a str, not {type(session_token).__name__}")
    if not session_token or not _printable(session_token) or " " in session_token:
        raise ValueError("session_token must be non-empty printable ASCII without spaces")
    if isinstance(amount_tokens, bool) or not isinstance(amount_tokens, int):
        raise TypeError(f"amount_tokens must be an int, not {type(amount_tokens).__name__}")
    if amount_tokens < 1:
        raise ValueError(f"amount_tokens must be >= 1, got {amount_tokens}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, not {type(model).__name__}")
    if not model.strip():
        raise ValueError("model must be a non-empty string")
    if not isinstance(idempotency_key, str):
        raise TypeError(f"idempotency_key must be a str, not {type(idempotency_key).__name__}")
    if not 1 <= len(idempotency_key) <= _MAX_KEY or not _printable(idempotency_key):
        raise ValueError("idempotency_key must be 1 to 255 printable ASCII characters")
    if _RETRY_SUFFIX.search(idempotency_key):
        raise ValueError(
            "idempotency_key must not end in ':retry<N>': the outbox derives those keys"
            " for retry_dead()"
        )


def check_same(existing: OutboxEntry, amount_tokens: int, model: str) -> OutboxEntry:
    """The existing entry if it is the same charge; ValueError if the key holds another."""
    if existing.amount_tokens != amount_tokens or existing.model != model:
        raise ValueError(
            f"idempotency_key {existing.idempotency_key!r} is already in the outbox with a"
            f" different charge ({existing.amount_tokens} tokens of {existing.model!r})"
        )
    return existing


def _printable(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)
