"""The records a call is made of: what to send (`Call`) and what came back (`ResponseMeta`).

Plain data with no behaviour, imported by the models, the core and the drivers
alike, so none of those needs another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Call", "ResponseMeta"]


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What the HTTP exchange behind a result looked like.

    Attributes:
        status_code: The final response's HTTP status (0 for a model built by hand).
        headers: The final response's headers (case-insensitive keys).
        request_id: Its `X-Request-Id` header, if any.
        idempotency_key: The `Idempotency-Key` sent with a charge, else None.
        retries: How many retries it took (0 when the first attempt succeeded).
        elapsed: Seconds from the first attempt to the final response.
    """

    status_code: int = 0
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    request_id: str | None = None
    idempotency_key: str | None = None
    retries: int = 0
    elapsed: float = 0.0


@dataclass(frozen=True, slots=True)
class Call:
    """One logical API call, fully built, before any attempt is made.

    Its repr leaves out the headers, the body and the secrets: error trackers
    and `pytest -l` print the locals of every frame a call passes through.
    """

    method: str
    path: str
    params: dict[str, str] | None
    # This call's own headers, on top of the client's (a session token among them).
    headers: dict[str, str] = field(repr=False)
    content: bytes | None = field(default=None, repr=False)
    idempotency_key: str | None = None
    # Values that must never reach a message, a field of an error or a log line.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_charge(self) -> bool:
        return self.idempotency_key is not None
