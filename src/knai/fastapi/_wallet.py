"""`Wallet`: what a handler charges through, and how a refusal becomes an answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, cast

from fastapi import HTTPException
from typing_extensions import TypeVar

from knai import InsufficientBalanceError, KNAIError, SessionExpiredError
from knai.metering import AsyncMeter
from knai.metering._meter import price_response
from knai.metering._stream import DEFAULT_STEP
from knai.sessions import AsyncSessionCache

if TYPE_CHECKING:
    from knai import ChargeResult

# What `Wallet.charge` returns: the wallet's `ChargeResult` inline, or the
# stored `knai.outbox.OutboxEntry` when the paywall charges through an outbox.
R = TypeVar("R", default="ChargeResult")

__all__ = ["PaymentRefused", "Wallet", "hint_for", "refusal", "sse_event"]

log = logging.getLogger("knai.fastapi")

_DONE = b"data: [DONE]\n\n"


class PaymentRefused(HTTPException):
    """An HTTP answer the wallet's refusal turns into: 402, 403 or 503 with a JSON `detail`.

    Attributes:
        reason: ``"no_active_session"``, ``"insufficient_balance"``,
            ``"session_expired"`` or ``"wallet_unavailable"``.
        body: The JSON body's ``detail``: ``reason``, ``message``,
            ``provider_username`` and, where one helps, a ``hint``.
        message: Its ``message``.
    """

    def __init__(self, status_code: int, reason: str, detail: dict[str, Any]) -> None:
        body: dict[str, Any] = {"reason": reason, **detail}
        super().__init__(status_code, detail=body)
        self.reason = reason
        self.body: dict[str, Any] = body
        self.message: str = str(detail.get("message", reason))


def hint_for(provider_slug: str) -> str:
    return (
        f"open a KNAI Wallet session for provider {provider_slug!r} (and top it up if"
        " need be), then retry this request"
    )


def refusal(exc: KNAIError, provider_username: str, provider_slug: str) -> PaymentRefused:
    """The answer for a wallet error: built from its type only (its text is not echoed)."""
    who = {"provider_username": provider_username}
    if isinstance(exc, InsufficientBalanceError):
        return PaymentRefused(
            402,
            "insufficient_balance",
            {
                "message": "the wallet balance does not cover this request",
                **who,
                "hint": hint_for(provider_slug),
            },
        )
    if isinstance(exc, SessionExpiredError) or exc.status_code in (403, 410):
        return PaymentRefused(
            403,
            "session_expired",
            {
                "message": "the wallet session has expired or was revoked",
                **who,
                "hint": hint_for(provider_slug),
            },
        )
    if exc.status_code == 402:
        return PaymentRefused(
            402, "payment_refused", {"message": "the wallet refused the charge", **who}
        )
    log.warning("wallet call for %r failed: %s", provider_username, type(exc).__name__)
    return PaymentRefused(
        503,
        "wallet_unavailable",
        {"message": "the wallet could not be reached; retry later", **who},
    )


def sse_event(chunk: object) -> bytes:
    """One server-sent event (``data: <json>``) for a chunk.

    A pydantic model (an OpenAI SDK chunk) is written by `model_dump_json`, a
    `str` or `bytes` is sent as the data as is, anything else by `json.dumps`.
    """
    if isinstance(chunk, bytes):
        data = chunk
    elif isinstance(chunk, str):
        data = chunk.encode()
    else:
        dump: Callable[..., str] | None = getattr(chunk, "model_dump_json", None)
        text = (
            dump(exclude_unset=True) if callable(dump) else json.dumps(chunk, separators=(",", ":"))
        )
        data = text.encode()
    return b"data: " + data + b"\n\n"


def _error_event(reason: str, message: str, status: int, charged: int) -> bytes:
    body = {"error": {"type": reason, "code": status, "message": message, "charged": charged}}
    return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


class Wallet(Generic[R]):
    """The caller's wallet for one request, from the `Paywall` dependency.

    Every charge carries an idempotency key made from `request_id` and its
    rank in the request (``f"{request_id}:{n}"``; a stream's increments add
    their own suffix), so a charge retried by the client is applied once.

    Through an outbox (``Paywall(..., outbox=...)``, a ``Wallet[OutboxEntry]``)
    each charge is stored under that same key and delivered later: `charge`
    returns the `OutboxEntry`, `charged` counts what was stored, and the
    wallet's refusal lands in the outbox's dead list instead of the answer.

    Attributes:
        provider_username: The caller, as the app's function resolved them.
        request_id: This request's id (fresh, or the trusted header's).
        charged: Wallet tokens charged through this wallet so far.
    """

    __slots__ = (
        "_cache",
        "_count",
        "_meter",
        "_token",
        "charged",
        "provider_username",
        "request_id",
    )

    def __init__(
        self,
        cache: AsyncSessionCache,
        meter: AsyncMeter[R],
        provider_username: str,
        session_token: str,
        request_id: str,
    ) -> None:
        self._cache = cache
        self._meter = meter
        self._token = session_token
        self._count = 0
        self.provider_username: str = provider_username
        self.request_id: str = request_id
        self.charged: int = 0

    def __repr__(self) -> str:
        # The session token stays out of reprs, tracebacks and logs.
        return (
            f"Wallet(provider_username={self.provider_username!r},"
            f" request_id={self.request_id!r}, charged={self.charged})"
        )

    def _key(self) -> str:
        self._count += 1
        return f"{self.request_id}:{self._count}"

    def _refused(self, exc: KNAIError) -> PaymentRefused:
        if isinstance(exc, SessionExpiredError) or exc.status_code in (403, 410):
            self._cache.invalidate(self.provider_username)
        return refusal(exc, self.provider_username, self._cache.provider.provider_slug)

    async def charge(self, amount_tokens: int, model: str) -> R:
        """Charge `amount_tokens` for `model`.

        Returns:
            The `ChargeResult`; through an outbox, the stored `OutboxEntry`.

        Raises:
            PaymentRefused: The wallet refused (402/403) or could not be asked
                (503); raise it on (or let it pass) to answer with it. Never
                through an outbox (the wallet answers later).
            ValueError, TypeError: A bad argument, before anything is sent.
            sqlite3.Error, psycopg.Error: Through an outbox, as `Outbox.charge`.
        """
        outbox = self._meter.outbox
        if outbox is not None:
            entry = await outbox.charge(
                self._token, amount_tokens, model, idempotency_key=self._key()
            )
            self.charged += amount_tokens
            return cast("R", entry)
        try:
            result = await self._cache.provider.charge(
                self._token, amount_tokens, model, idempotency_key=self._key()
            )
        except KNAIError as exc:
            raise self._refused(exc) from None
        self.charged += amount_tokens
        return cast("R", result)

    async def charge_usage(self, response: Any, *, model: str | None = None) -> R | None:
        """Charge the usage an LLM response reports, priced by the paywall's table.

        Args:
            response: An OpenAI or Anthropic response, or its JSON (see
                `knai.metering.usage_of`).
            model: The model to price (default: the response's).

        Returns:
            The charge (as `charge` returns it), or None when the usage costs
            nothing (nothing is sent).

        Raises:
            PaymentRefused: As `charge`.
            ValueError: The response reports no usage.
        """
        try:
            result = await self._meter.charge(
                self._token, response, model=model, idempotency_key=self._key()
            )
        except KNAIError as exc:
            raise self._refused(exc) from None
        if result is not None:
            self.charged += price_response(self._meter.prices, response, model)[1]
        return result

    def stream(
        self,
        upstream: AsyncIterable[Any],
        *,
        model: str,
        step: int = DEFAULT_STEP,
        encode: Callable[[Any], bytes] = sse_event,
        done: bytes | None = _DONE,
    ) -> AsyncIterator[bytes]:
        """Meter `upstream` as it flows, as bytes for a `StreamingResponse`.

        Each chunk is encoded (`sse_event` by default) and handed on as soon as
        it arrives; increments are charged in the background (`AsyncMeter`),
        the rest when the upstream ends. After a clean end comes `done`
        (``data: [DONE]``, OpenAI's end marker; None: nothing). A refusal
        (or an upstream that fails) instead ends the stream with one
        ``event: error`` whose data is ``{"error": {"type", "code", "message",
        "charged"}}``, which the OpenAI SDK raises as an `APIError`; nothing is
        logged with a traceback.

        Args:
            upstream: The LLM's chunks (OpenAI or Anthropic objects or dicts).
            model: The model charged for.
            step: Wallet tokens per background increment at least.
            encode: Turns a chunk into the bytes sent.
            done: Sent after a clean end.

        Raises:
            ValueError, TypeError: A bad argument, before anything is sent.
        """
        metered = self._meter.stream(self._token, model=model, key=self._key(), step=step)
        return self._flow(metered, upstream, encode, done)

    async def _flow(
        self,
        metered: Any,
        upstream: AsyncIterable[Any],
        encode: Callable[[Any], bytes],
        done: bytes | None,
    ) -> AsyncIterator[bytes]:
        failed: str | None = None
        async with metered:
            try:
                async for chunk in metered.wrap(upstream):
                    yield encode(chunk)
            except Exception as exc:  # the upstream broke: settle what was streamed
                failed = type(exc).__name__
        self.charged += metered.charged
        stopped: KNAIError | None = metered.stopped
        if stopped is not None:
            answer = self._refused(stopped)
            log.info(
                "stream of %r for %r stopped: %s after %d tokens",
                metered.model,
                self.provider_username,
                answer.reason,
                metered.charged,
            )
            yield _error_event(answer.reason, answer.message, answer.status_code, metered.charged)
        elif failed is not None:
            log.warning("upstream stream for %r failed: %s", self.provider_username, failed)
            yield _error_event("upstream_error", "the upstream stream failed", 502, metered.charged)
        elif done is not None:
            yield done
