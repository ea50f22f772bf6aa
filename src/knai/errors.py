"""0.1.0's module path, kept for existing imports: `from knai.errors import KNAIError`."""

from ._errors import (
    APIConnectionError,
    APITimeoutError,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    SessionExpiredError,
    SessionWaitTimeoutError,
)

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
