"""The one status table: which HTTP status the client retries and the exception it ends in.

As the README's "Errors" and "Retries and idempotency" sections document them; the
respx tests, the fault matrix and the fuzz tests all read it from here.
"""

from __future__ import annotations

from knai import (
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    RateLimitError,
    ServerError,
    SessionExpiredError,
)

# Retried (with backoff, honouring Retry-After); once retries run out, this is raised.
RETRIED: dict[int, type[KNAIError]] = {
    408: KNAIError,
    429: RateLimitError,
    **dict.fromkeys([500, 502, 503, 504], ServerError),
}

# Never retried: raised after the first answer, and a refused charge was not applied.
PERMANENT: dict[int, type[KNAIError]] = {
    400: KNAIError,
    401: InvalidAPIKeyError,
    402: InsufficientBalanceError,
    403: SessionExpiredError,
    404: KNAIError,
    409: KNAIError,
    410: SessionExpiredError,
    422: KNAIError,
}


def error_for(status: int) -> type[KNAIError]:
    """The exception class any non-2xx `status` ends in (a table entry, else by its class)."""
    known = {**RETRIED, **PERMANENT}
    return known.get(status, ServerError if status >= 500 else KNAIError)
