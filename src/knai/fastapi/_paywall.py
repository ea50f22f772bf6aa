"""`Paywall`: the FastAPI dependency that finds the caller's active session."""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Generic, cast, overload

from fastapi import Depends, Request

from knai import KNAIError
from knai.metering import AsyncMeter, PriceTable
from knai.sessions import AsyncSessionCache, NoActiveSessionError

from ._wallet import PaymentRefused, R, Wallet, hint_for, log, refusal

if TYPE_CHECKING:
    from knai import ChargeResult
    from knai.metering._deferred import AsyncChargeOutbox
    from knai.outbox import OutboxEntry

__all__ = ["Paywall"]

# A request id taken from a header becomes part of idempotency keys: printable
# ASCII without spaces, short enough to leave room for the suffixes, and no
# ":" (the suffixes' separator), so that no id's keys can equal another id's.
_REQUEST_ID = re.compile(r"[\x21-\x39\x3b-\x7e]{1,100}")


class Paywall(Generic[R]):
    """A FastAPI dependency (``Depends(paywall)``) that gives a handler the caller's `Wallet`.

    Args:
        sessions: The cache the active sessions come from (its provider charges).
        username: Resolves the caller's ``provider_username`` from your own
            authentication. It is itself a FastAPI dependency: sync or async,
            taking whatever FastAPI can inject (``Header()``, ``Request``, other
            dependencies), and raising `HTTPException` (say 401) for a stranger.
        prices: Prices for `Wallet.charge_usage` and `Wallet.stream` (default
            one wallet token per model token).
        request_id_header: A header whose value becomes the request id of the
            idempotency keys, for when a proxy you trust sets it (say
            ``"X-Request-Id"``). Default None: a fresh id per request, because
            a key the caller chooses would let a replay be served twice and
            charged once. The key is scoped by user either way.
        wait: Seconds to wait for a pending session before answering 402
            (default: the cache's).
        outbox: A `knai.outbox.AsyncOutbox` the wallets charge through instead
            of inline (same keys); see `Wallet`. The session is still checked
            before the handler runs.

    Raises:
        TypeError: `sessions` is not an `AsyncSessionCache`, or `username` not callable.
    """

    @overload
    def __init__(
        self: Paywall[ChargeResult],
        sessions: AsyncSessionCache,
        username: Callable[..., str] | Callable[..., Awaitable[str]],
        *,
        prices: PriceTable | None = None,
        request_id_header: str | None = None,
        wait: float | None = None,
        outbox: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Paywall[OutboxEntry],
        sessions: AsyncSessionCache,
        username: Callable[..., str] | Callable[..., Awaitable[str]],
        *,
        prices: PriceTable | None = None,
        request_id_header: str | None = None,
        wait: float | None = None,
        outbox: AsyncChargeOutbox,
    ) -> None: ...

    def __init__(
        self,
        sessions: AsyncSessionCache,
        username: Callable[..., str] | Callable[..., Awaitable[str]],
        *,
        prices: PriceTable | None = None,
        request_id_header: str | None = None,
        wait: float | None = None,
        outbox: AsyncChargeOutbox | None = None,
    ) -> None:
        # Callers without a type checker pass anything.
        if not isinstance(cast(object, sessions), AsyncSessionCache):
            raise TypeError(f"sessions must be an AsyncSessionCache, got {type(sessions).__name__}")
        if not callable(username):
            raise TypeError("username must be a callable (a FastAPI dependency)")
        self.sessions: AsyncSessionCache = sessions
        meter = (
            AsyncMeter(sessions.provider, prices)
            if outbox is None
            else AsyncMeter(sessions.provider, prices, outbox=outbox)
        )
        self.meter: AsyncMeter[R] = cast("AsyncMeter[R]", meter)
        self.request_id_header: str | None = request_id_header
        self.wait: float | None = wait
        # FastAPI reads a dependency's parameters from its signature: this one
        # asks for the request and for whatever `username` depends on.
        self.__signature__: inspect.Signature = inspect.Signature(
            [
                inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
                inspect.Parameter(
                    "provider_username",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[str, Depends(username)],
                ),
            ],
            return_annotation=Wallet,
        )

    def _request_id(self, request: Request, provider_username: str) -> str:
        given = request.headers.get(self.request_id_header) if self.request_id_header else None
        if given is not None and _REQUEST_ID.fullmatch(given):
            # Scoped by user: another user's id cannot reach this user's charges.
            return f"{uuid.uuid5(uuid.NAMESPACE_URL, provider_username).hex[:12]}-{given}"
        return uuid.uuid4().hex

    async def __call__(self, *, request: Request, provider_username: Any) -> Wallet[R]:
        """The caller's `Wallet`; FastAPI calls this for ``Depends(paywall)``.

        Raises:
            PaymentRefused: 402 ``no_active_session`` (with a hint on opening
                one), 503 ``wallet_unavailable``.
            TypeError: The `username` function returned something not a str.
        """
        if not isinstance(provider_username, str) or not provider_username:
            raise TypeError(
                "the Paywall's username function must return a non-empty str,"
                f" got {type(provider_username).__name__}"
            )
        slug = self.sessions.provider.provider_slug
        try:
            session = await self.sessions.get(provider_username, wait=self.wait)
            token = session.session_token
        except NoActiveSessionError as exc:
            log.info("402 for %r: no active session (%s)", provider_username, exc.last_status)
            raise PaymentRefused(
                402,
                "no_active_session",
                {
                    "message": "no active KNAI Wallet session",
                    "provider_username": provider_username,
                    "session_status": exc.last_status,
                    "hint": hint_for(slug),
                },
            ) from None
        except KNAIError as exc:
            raise refusal(exc, provider_username, slug) from None
        return Wallet(
            self.sessions,
            self.meter,
            provider_username,
            token,
            self._request_id(request, provider_username),
        )
