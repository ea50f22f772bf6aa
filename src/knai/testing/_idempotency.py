"""Idempotency records of the sandbox wallet: what a recorded charge is bound to.

A decided charge (200 or 402) carrying an ``Idempotency-Key`` is recorded with a
SHA-256 fingerprint of the session token and the canonical JSON body; a replay
with the same fingerprint gets the recorded reply, any other gets 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._ledger_records import Reply

IDEMPOTENCY_CONFLICT = "Idempotency-Key reused with a different request"
RECORDED_STATUSES = frozenset({200, 402})
"""Only decided charges are recorded: fixing a refused request and retrying works."""


def utf8(text: str) -> bytes:
    """``text`` as bytes, lone surrogates kept (a header may carry any string)."""
    return text.encode("utf-8", "surrogatepass")


def secret_digest(secret: str) -> bytes:
    """The SHA-256 of a secret: the key sessions are found by, so no dict holds a token."""
    return hashlib.sha256(utf8(secret)).digest()


@dataclass(frozen=True)
class IdempotencyRecord:
    """The recorded reply to one key, and the fingerprint of the request it answered."""

    fingerprint: bytes
    reply: Reply


def fingerprint(session_token: str, body: Mapping[str, Any]) -> bytes:
    """What a key is bound to: the token and the canonical JSON of the body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    material = utf8(session_token) + b"\x00" + canonical.encode()
    return hashlib.sha256(material).digest()
