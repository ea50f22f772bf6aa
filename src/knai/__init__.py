"""knai: the KNAI Wallet SDK for AI providers.

Wait for a user's wallet session, then charge it per use::

    from knai import KNAIProvider

    with KNAIProvider(provider_api_key="sk_...", provider_slug="acme") as provider:
        session = provider.wait_for_session("user123", timeout=300)
        result = provider.charge(session["session_token"], amount_tokens=1500, model="gpt-4")
"""

import typing as _typing

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
from ._retry import RetryPolicy
from ._types import ResponseMeta
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._models import ChargeResult, Session

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
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionExpiredError",
    "SessionWaitTimeoutError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # The pydantic models are built on first use, not at `import knai`
    # (building them costs more than importing httpx).
    if name in ("ChargeResult", "Session"):
        from . import _models

        value = getattr(_models, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
