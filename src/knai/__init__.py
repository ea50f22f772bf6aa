"""knai: the KNAI Wallet SDK for AI providers.

Wait for a user's wallet session, then charge it per use::

    from knai import KNAIProvider

    with KNAIProvider(provider_api_key="sk_...", provider_slug="acme") as provider:
        session = provider.wait_for_session("user123", timeout=300)
        result = provider.charge(session.session_token, amount_tokens=1500, model="gpt-4")
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
from ._json import JSONValue
from ._retry import RetryPolicy
from ._types import ResponseMeta
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._models import ActiveSession, ChargeResult, Session, SessionStatus

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "ActiveSession",
    "AsyncKNAIProvider",
    "ChargeResult",
    "InsufficientBalanceError",
    "InvalidAPIKeyError",
    "JSONValue",
    "KNAIError",
    "KNAIProvider",
    "RateLimitError",
    "ResponseMeta",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionExpiredError",
    "SessionStatus",
    "SessionWaitTimeoutError",
    "__version__",
]


_LAZY = frozenset({"ActiveSession", "ChargeResult", "Session", "SessionStatus"})

# Defined only at run time: to a type checker, knai has exactly the names
# imported above, so a misspelt `from knai import Sesion` is an error.
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        # The pydantic models are built on first use, not at `import knai`
        # (building them costs more than importing httpx).
        if name in _LAZY:
            from . import _models

            value = getattr(_models, name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
