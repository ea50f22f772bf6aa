"""The exceptions raised by knai.

Every exception the SDK raises on purpose derives from `KNAIError`, apart from
`ValueError` for arguments that are wrong before anything is sent::

    KNAIError
    ├── InvalidAPIKeyError          401
    ├── InsufficientBalanceError    402
    ├── SessionExpiredError         403, 410
    ├── RateLimitError              429
    ├── ServerError                 5xx
    ├── APIConnectionError          no response (refused, reset, dropped)
    │   └── APITimeoutError         no response in time
    ├── ResponseValidationError     an answer that is not the expected JSON
    └── SessionWaitTimeoutError     wait_for_session(timeout=...) ran out
                                    (also a built-in TimeoutError)

Any other non-2xx status (400, 404, 409, 422, ...) raises `KNAIError` itself,
as 0.1.0 did. The first four classes, their attributes, default messages and
`str()` format are those of 0.1.0.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._json import JSONValue

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "InsufficientBalanceError",
    "InvalidAPIKeyError",
    "KNAIError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "SessionExpiredError",
    "SessionWaitTimeoutError",
]


class KNAIError(Exception):
    """Base class of every KNAI error; also raised for unmapped HTTP statuses.

    Attributes:
        message: What went wrong, from the body's `error` or `message` field.
        status_code: The HTTP status, or None when no response was received.
        response_body: The parsed error body (`{"error": <text>}` if it was
            not JSON), or None.
        request_id: The response's `X-Request-Id` header, if any: quote it to
            KNAI support.
        headers: The response headers, or None.
        idempotency_key: For a charge, the `Idempotency-Key` that was sent.
            Replay the charge with this key to settle an unknown outcome.
        may_have_been_applied: True when this error came from a charge that the
            wallet may nevertheless have applied (no answer after the request
            went out, a 5xx, or an unreadable 2xx). Retry with the same
            `idempotency_key`; never charge anew with a fresh key.
        attempts: How many HTTP attempts were made (1 + retries).
        retry_after: The server's `Retry-After`, in seconds, if it sent one.
    """

    default_message = "Unknown error"

    def __init__(
        self,
        message: str | None = None,
        status_code: int | None = None,
        response_body: JSONValue = None,
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        may_have_been_applied: bool = False,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        if message is None:
            message = self.default_message
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.response_body = response_body
        self.request_id = request_id
        self.headers = headers
        self.idempotency_key = idempotency_key
        self.may_have_been_applied = may_have_been_applied
        self.attempts = attempts
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = self.message
        if self.status_code:
            text = f"{text} (HTTP {self.status_code})"
        if self.may_have_been_applied:
            text += (
                "; the charge may have been applied: replay it with the same"
                " idempotency_key to learn its outcome"
            )
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"


class InvalidAPIKeyError(KNAIError):
    """The provider API key or slug was refused (HTTP 401)."""

    default_message = "Invalid API key"


class InsufficientBalanceError(KNAIError):
    """The wallet cannot cover the charge (HTTP 402): this request was refused."""

    default_message = "Insufficient wallet balance"


class SessionExpiredError(KNAIError):
    """The session token is expired, revoked or unknown (HTTP 403 or 410)."""

    default_message = "Session has expired"


class RateLimitError(KNAIError):
    """Too many requests (HTTP 429); `retry_after` says how long to wait."""

    default_message = "Rate limited"


class ServerError(KNAIError):
    """The wallet service failed (HTTP 5xx)."""

    default_message = "KNAI server error"


class APIConnectionError(KNAIError):
    """No HTTP response was received: refused, reset or dropped connection."""

    default_message = "Could not reach the KNAI API"


class APITimeoutError(APIConnectionError):
    """No HTTP response was received within the timeout."""

    default_message = "Request to the KNAI API timed out"


class ResponseValidationError(KNAIError):
    """The response was not the JSON the protocol promises.

    `raw_body` holds (up to 64 KiB of) the bytes received, for diagnosis.
    """

    default_message = "Unexpected response from the KNAI API"

    def __init__(
        self,
        message: str | None = None,
        status_code: int | None = None,
        response_body: JSONValue = None,
        *,
        raw_body: bytes = b"",
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        may_have_been_applied: bool = False,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code,
            response_body,
            request_id=request_id,
            headers=headers,
            idempotency_key=idempotency_key,
            may_have_been_applied=may_have_been_applied,
            attempts=attempts,
            retry_after=retry_after,
        )
        self.raw_body = raw_body


class SessionWaitTimeoutError(KNAIError, TimeoutError):
    """`wait_for_session(timeout=...)` reached its deadline with no active session."""

    default_message = "No active session before the timeout"
