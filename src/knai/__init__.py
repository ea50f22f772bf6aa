"""knai: the KNAI Wallet SDK for AI providers.

Wait for a user's wallet session, then charge it per use::

    from knai import KNAIProvider

    with KNAIProvider(provider_api_key="sk_...", provider_slug="acme") as provider:
        session = provider.wait_for_session("user123", timeout=300)
        result = provider.charge(session["session_token"], amount_tokens=1500, model="gpt-4")
"""

from ._client import AsyncKNAIProvider, KNAIProvider
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
from ._models import ChargeResult, ResponseMeta, Session
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncKNAIProvider",
    "ChargeResult",
    "InsufficientBalanceError",
    "InvalidAPIKeyError",
    "KNAIError",
    "KNAIProvider",
    "RateLimitError",
    "ResponseMeta",
    "ResponseValidationError",
    "ServerError",
    "Session",
    "SessionExpiredError",
    "SessionWaitTimeoutError",
    "__version__",
]
