"""`Meter`: charge `KNAIProvider` sessions for responses and for streams as they flow."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from knai import KNAIError, KNAIProvider

from ._deferred import ChargeOutbox, R, check_outbox
from ._prices import PriceTable
from ._readers import model_of, usage_of
from ._stream import DEFAULT_STEP, MeteredBase, check_stream_args

if TYPE_CHECKING:
    from knai import ChargeResult
    from knai.outbox import OutboxEntry

    from ._prices import Price

__all__ = ["Meter", "MeteredStream", "price_response"]

T = TypeVar("T")


def price_response(prices: PriceTable, response: Any, model: str | None) -> tuple[str, int]:
    """The model and amount to charge for `response`; raises before anything is sent."""
    usage = usage_of(response)
    if model is None:
        model = model_of(response)
        if model is None:
            raise ValueError(f"model: the {type(response).__name__} names no model; pass model=...")
    return model, prices.amount(model, usage)


class Meter(Generic[R]):
    """Charges LLM usage to wallet sessions through a `KNAIProvider`.

    Args:
        provider: The client to charge through (not closed by the meter).
        prices: The price table (default: every model at 1 wallet token per
            model token).
        outbox: A `knai.outbox.Outbox` to charge through instead of inline:
            `charge` and streams store their charges in it (same keys) and
            return once stored; its sender delivers them. A refusal then
            lands in the outbox's dead list, so a stream cannot stop on it.

    Example:
        >>> meter = Meter(provider, PriceTable.from_file("prices.toml"))  # doctest: +SKIP
        >>> meter.charge(token, completion)                                # doctest: +SKIP
    """

    @overload
    def __init__(
        self: Meter[ChargeResult],
        provider: KNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Meter[OutboxEntry],
        provider: KNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: ChargeOutbox,
    ) -> None: ...

    def __init__(
        self,
        provider: KNAIProvider,
        prices: PriceTable | None = None,
        *,
        outbox: ChargeOutbox | None = None,
    ) -> None:
        # Untyped callers pass anything: the annotations are checked at run time.
        if not isinstance(cast(object, provider), KNAIProvider):
            raise TypeError("provider must be a KNAIProvider (use AsyncMeter for async)")
        if prices is not None and not isinstance(cast(object, prices), PriceTable):
            raise TypeError("prices must be a PriceTable")
        if outbox is not None:
            check_outbox(outbox, is_async=False)
        self.provider: KNAIProvider = provider
        self.prices: PriceTable = prices if prices is not None else PriceTable()
        self.outbox: ChargeOutbox | None = outbox

    def charge(
        self,
        session_token: str,
        response: Any,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> R | None:
        """Charge the usage `response` reports.

        Args:
            session_token: The active session's token (secret).
            response: An OpenAI or Anthropic response, its usage, or their dicts.
            model: The model to price and charge (default: the response's).
            idempotency_key: Passed to `KNAIProvider.charge`; give your request
                id so a replay after a crash charges nothing twice.

        Returns:
            The `ChargeResult`; with an outbox, the stored `OutboxEntry`
            (not yet sent). None when the amount is 0 (nothing is sent).

        Raises:
            ValueError: The response carries no usage or names no model, or the
                table has no price for it; nothing was sent.
            KNAIError: As `KNAIProvider.charge` raises (inline only).
            sqlite3.Error, psycopg.Error: With an outbox, as `Outbox.charge`.
        """
        model, amount = price_response(self.prices, response, model)
        if amount == 0:
            return None
        if self.outbox is not None:
            stored = self.outbox.charge(
                session_token, amount, model, idempotency_key=idempotency_key
            )
            return cast("R", stored)
        return cast(
            "R",
            self.provider.charge(session_token, amount, model, idempotency_key=idempotency_key),
        )

    def stream(
        self, session_token: str, *, model: str, key: str, step: int = DEFAULT_STEP
    ) -> MeteredStream:
        """A metered stream: `with meter.stream(...) as metered:`, then `metered.wrap(upstream)`.

        Args:
            session_token: The active session's token (secret).
            model: The model to price and charge.
            key: The base of the idempotency keys: increment n is sent as
                `f"{key}:{n}"`, the settlement as `f"{key}:final"`. Use your
                request id: a replay of the same chunks under the same key
                charges nothing twice.
            step: The least amount of an increment, in wallet tokens.

        Raises:
            ValueError, TypeError: An argument is malformed, or no price for `model`.
        """
        check_stream_args(session_token, model, key, step)
        return MeteredStream(
            self.provider, session_token, model, key, step, self.prices.price(model), self.outbox
        )


def _close(upstream: object) -> None:
    close = getattr(upstream, "close", None)
    if callable(close):
        close()


class MeteredStream(MeteredBase):
    """One stream charged as it flows, inline (see `Meter.stream`).

    Increments are charged inline: the chunk that makes one due waits for the
    wallet's answer (one round trip) before it is yielded. Leaving the `with`
    block settles: unsettled increments are replayed, then the rest is charged
    from the reported usage (or the lower bound, with one warning logged).
    Wallet errors never escape the block: a refusal sets `stopped`, an
    unknown outcome stays in `unsettled` (call `settle()` again to retry).

    Through an outbox (`Meter(..., outbox=...)`) each charge is stored under
    the same key instead, and `charged` counts what was stored: the wallet
    answers later, so `stopped` stays None. A store error propagates; the
    same chunks under the same key store the same charges again, once.
    """

    def __init__(
        self,
        provider: KNAIProvider,
        session_token: str,
        model: str,
        key: str,
        step: int,
        price: Price,
        outbox: ChargeOutbox | None = None,
    ) -> None:
        super().__init__(session_token, model, key, step, price)
        self._provider = provider
        self._outbox = outbox

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.settle()

    def wrap(self, upstream: Iterable[T]) -> Iterator[T]:
        """Yield every chunk of `upstream` unchanged, charging increments as they fall due.

        After a refusal it yields nothing more, closes `upstream` (if it has
        `close()`) and returns; `stopped` holds the refusal.
        """
        feed = self._tally.feed
        for chunk in upstream:
            due = feed(chunk)
            if due:
                self._send(self._increment_key(), due)
                if self.stopped is not None:
                    _close(upstream)
                    return
            yield chunk

    def settle(self) -> None:
        """Replay unsettled charges and charge the rest; done on leaving the `with` block."""
        for key, amount in self._settlement():
            self._send(key, amount)

    def _send(self, key: str, amount: int) -> None:
        if self._outbox is not None:
            self._outbox.charge(self._token, amount, self.model, idempotency_key=key)
            self._succeeded(amount)
            return
        try:
            self._provider.charge(self._token, amount, self.model, idempotency_key=key)
        except KNAIError as exc:
            self._failed(key, amount, exc)
        else:
            self._succeeded(amount)
